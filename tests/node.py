"""Node.js tools for the tests: npm packages at pinned versions, installed once into .cache/node.

Every test that runs an npm package asks `install()` for it; the packages share one
prefix (not committed), and a file lock keeps parallel test processes from installing
into it at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.live import ROOT

NODE_DIR = ROOT / ".cache" / "node"
BIN = NODE_DIR / "node_modules" / ".bin"
TYPESCRIPT = "5.9.3"  # the one TypeScript every tsc check uses
NODE_ENV = {
    "REDOCLY_TELEMETRY": "off",
    "REDOCLY_SUPPRESS_UPDATE_NOTICE": "true",
    "NO_UPDATE_NOTIFIER": "1",
    "npm_config_update_notifier": "false",
    "npm_config_fund": "false",
    "npm_config_audit": "false",
}


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def installed(package: str) -> str | None:
    """The version of `package` under .cache/node, or None when it is not there."""
    manifest = NODE_DIR / "node_modules" / package / "package.json"
    try:
        return json.loads(manifest.read_text())["version"]
    except (OSError, ValueError, KeyError):
        return None


def install(packages: dict[str, str], needed_for: str) -> dict[str, str]:
    """Install `packages` (name -> exact version) where missing; the environment to run them in.

    Fails the test (naming `needed_for`) when node or npm is not on PATH.
    """
    missing = [tool for tool in ("node", "npm", "npx") if shutil.which(tool) is None]
    if missing:
        pytest.fail(
            f"{', '.join(missing)} not found on PATH: {needed_for} need Node.js "
            "and npm (Debian: apt-get install nodejs npm)"
        )
    env = {**os.environ, **NODE_ENV}
    with _locked(NODE_DIR / ".install.lock"):
        wanted = [f"{p}@{v}" for p, v in packages.items() if installed(p) != v]
        if wanted:
            result = subprocess.run(
                [
                    "npm",
                    "install",
                    "--no-audit",
                    "--no-fund",
                    "--save-exact",
                    "--prefix",
                    str(NODE_DIR),
                    *wanted,
                ],
                capture_output=True,
                text=True,
                timeout=600,
                env=env,
            )
            assert result.returncode == 0, f"npm install {wanted} failed:\n{result.stderr}"
    for package, version in packages.items():
        assert installed(package) == version, package
    return env
