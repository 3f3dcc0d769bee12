"""Build this repository's wheels and install them into fresh virtualenvs (packaging tests)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    """Run a command, failing the test with its output when it fails."""
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=480, **kwargs)
    assert proc.returncode == 0, f"{cmd}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def copy_checkout(target: Path) -> Path:
    """The files git knows (committed or not), copied to `target`.

    Wheels are built from such a copy: a build/ folder left in the checkout
    would add stale modules to the wheel, and the build would leave one there.
    """
    listed = run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT).stdout
    for name in filter(None, listed.split("\0")):
        source, copy = ROOT / name, target / name
        copy.parent.mkdir(parents=True, exist_ok=True)
        if source.is_symlink():
            copy.symlink_to(os.readlink(source))
        elif source.is_file():
            shutil.copy2(source, copy)
    return target


def build_wheel(project: str, out: Path) -> Path:
    """The wheel of `project` ("." for TeamHub, "distributions/reactive"), built into `out`."""
    source = copy_checkout(out / "source")
    run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "-q",
            "-w",
            str(out),
            str(source / project),
        ]
    )
    (wheel,) = out.glob("*.whl")
    return wheel


def fresh_venv(path: Path, *requirements: str) -> Path:
    """A new virtualenv at `path` with `requirements` (and what they declare) installed."""
    run([sys.executable, "-m", "venv", str(path)])
    run([str(path / "bin" / "python"), "-m", "pip", "install", "-q", *requirements])
    return path
