"""The browser client's ES modules, checked without a browser.

tsc (the TypeScript pinned in tests/node.py, installed into .cache/node) type-checks
every module of reactive/static/reactive/ against its JSDoc types, strictly
(tests/js/tsconfig.json), and refuses wrong uses of the public API and of the wire
frames. Node's built-in test runner runs tests/js/*.test.mjs: the persisted cache, the
query state machine, the registry, the transports and the connection, against fakes.
Each check fails with the tool's own output. The browser suite (tests/system/browser/) covers
the same modules in Chromium.
"""

from __future__ import annotations

import collections
import json
import re
import subprocess
from pathlib import Path

import pytest

from tests.live import ROOT
from tests.node import BIN, TYPESCRIPT, install

MODULES = ROOT / "reactive" / "static" / "reactive"
TESTS = ROOT / "tests" / "js"
CONFIG = TESTS / "tsconfig.json"
TSC_ERROR = re.compile(r"^(?P<file>[^(\s]+)\((?P<line>\d+),\d+\): error TS\d+", re.M)

# Wrong uses the types must refuse (each line marked ERROR), beside right ones they must allow.
MISUSES = """\
// @ts-check
import { PersistentCache, ReactiveClient, ReactiveError } from "{modules}/client.js";

const client = new ReactiveClient({ user: 1, transport: "sse", storage: null });
client.on("state", ({ state }) => state === "connected");
client.on("stats", (stats) => stats.hitRate?.toFixed(1));
client.subscribe("agents.getAll", { limit: 5 }, ({ data, isStale, error }) => [data, isStale, error?.status]);
new ReactiveClient({ transport: "carrier-pigeon" }); // ERROR
new PersistentCache({ user: "u", maxEntries: "many" }); // ERROR
client.on("state", ({ state }) => state.toFixed()); // ERROR
client.on("nothing", () => null); // ERROR
client.subscribe("agents.getAll", {}, (snapshot) => snapshot.isStale.length); // ERROR
new ReactiveError(422, { fields: [{ field: "name" }] }); // ERROR

/** @type {import("{modules}/protocol.js").WsSubscribe} */
export const subscribe = { type: "subscribe", id: "q1", name: "agents.getAll", input: {}, since: "5" };
/** @type {import("{modules}/protocol.js").WsSubscribe} */
export const noInput = { type: "subscribe", id: "q1", name: "agents.getAll" }; // ERROR
/** @type {import("{modules}/protocol.js").WsServerMessage} */
export const unknown = { type: "invalidated", id: "q1" }; // ERROR
/** @type {import("{modules}/cache.js").CacheEntry} */
export const entry = { d: [], t: "agency.agent" }; // ERROR
"""


@pytest.fixture(scope="module")
def node() -> dict[str, str]:
    """The environment tsc runs in (TypeScript installed into .cache/node when missing)."""
    env = install({"typescript": TYPESCRIPT}, "the browser client's checks")
    version = subprocess.run(
        ["node", "-p", "process.versions.node"], capture_output=True, text=True, env=env
    ).stdout.strip()
    major, minor = (int(part) for part in version.split(".")[:2])
    # The modules are plain .js with no package.json: Node tells ES modules apart since 20.19.
    assert (major, minor) >= (20, 19), f"node {version}: the client's unit tests need 20.19+"
    return env


def tsc(env: dict[str, str], config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "tsc"), "-p", str(config), "--pretty", "false", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=110,
        env=env,
    )


def test_every_module_is_type_checked(node):
    modules = sorted(MODULES.glob("*.js"))
    assert {"client.js", "cache.js", "queries.js", "transports.js", "connection.js"} <= {
        path.name for path in modules
    }
    unchecked = [p.name for p in modules if not p.read_text().startswith("// @ts-check\n")]
    assert not unchecked, f"no // @ts-check first: {unchecked}"
    listed = tsc(node, CONFIG, "--listFilesOnly")
    assert listed.returncode == 0, listed.stdout + listed.stderr
    assert set(modules) <= {Path(line) for line in listed.stdout.splitlines()}


def test_the_modules_have_no_type_errors(node):
    result = tsc(node, CONFIG, "--noEmit")
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_types_refuse_wrong_uses_of_the_api_and_the_frames(node, tmp_path):
    misuses = tmp_path / "misuses.js"
    misuses.write_text(MISUSES.replace("{modules}", str(MODULES)))
    config = tmp_path / "tsconfig.json"
    config.write_text(
        json.dumps({"extends": str(CONFIG), "include": [str(MODULES / "*.js"), str(misuses)]})
    )
    result = tsc(node, config, "--noEmit")
    errors: dict[str, set[int]] = collections.defaultdict(set)
    for match in TSC_ERROR.finditer(result.stdout):
        errors[Path(match["file"]).name].add(int(match["line"]))
    marked = {i for i, line in enumerate(MISUSES.splitlines(), 1) if line.endswith("// ERROR")}
    assert dict(errors) == {"misuses.js": marked}, result.stdout + result.stderr


def test_the_unit_tests_pass(node):
    expected = sum(
        len(re.findall(r"^test\(", path.read_text(), flags=re.M))
        for path in TESTS.glob("*.test.mjs")
    )
    assert expected >= 40
    result = subprocess.run(
        ["node", "--test", str(TESTS)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=110,
        env=node,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert re.search(rf"^# pass {expected}$", output, re.M), output  # every test ran
    assert re.search(r"^# fail 0$", output, re.M), output
