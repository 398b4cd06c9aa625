"""The SQLite name resolver's garbage collector, on real daprd sidecars of their own (the shop's
stack keeps running beside them).

components-contrib 1.18.3's collector deletes every *live* registration, and each sidecar then
dies "Host registration lost" at its next renewal: one hour after the first `task up` with the
default interval (dapr/README.md has the bug report). The shop turns the collector off
(dapr/config.yaml, `cleanupInterval: "0"`). Here the collector is let run on a short interval on
a fresh resolver database, to show what it does, and the shop's configuration is run as long.
"""

import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import yaml

from tests.e2e.shop import eventually
from tests.stack import stack

CLEANUP_SECONDS = 2
# Ports of these test sidecars: their own block, below the ephemeral range, clear of the stack's.
BASE_PORT = 3800


def shop_config(folder: Path, cleanup_interval: str | None) -> Path:
    """dapr/config.yaml with the resolver database in `folder`, the collector set as asked."""
    config = yaml.safe_load((stack.ROOT / "dapr" / "config.yaml").read_text())
    resolver = config["spec"]["nameResolution"]["configuration"]
    resolver["connectionString"] = str(folder / "nameresolution.db")
    if cleanup_interval is not None:
        resolver["cleanupInterval"] = cleanup_interval
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@contextmanager
def sidecars(config: Path, folder: Path) -> Iterator[list[subprocess.Popen]]:
    """Two daprd, `caller` and `callee`; `callee` fronts a static HTTP app (python http.server)."""
    resources = folder / "resources"
    resources.mkdir(exist_ok=True)
    app_port = BASE_PORT + 90
    app = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(app_port), "--bind", "127.0.0.1", "--directory", str(folder)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    processes = [app]
    try:
        for i, app_id in enumerate(("caller", "callee")):
            log = open(folder / f"{app_id}.log", "wb")  # noqa: SIM115 - closed with the process
            cmd = stack.bare_daprd_cmd(app_id, BASE_PORT + i, resources=resources, config=config,
                                       app_port=app_port if app_id == "callee" else None)
            processes.append(subprocess.Popen(cmd, env={"DAPR_HOST_IP": "127.0.0.1", "PATH": "/usr/bin:/bin"},
                                              stdout=log, stderr=subprocess.STDOUT))
        yield processes[1:]
    finally:
        stack.terminate(processes)


def invoke_callee() -> int | None:
    try:
        return httpx.get(f"http://127.0.0.1:{BASE_PORT}/v1.0/invoke/callee/method/config.yaml", timeout=5).status_code
    except httpx.HTTPError:
        return None


def test_the_resolvers_own_collector_kills_live_sidecars() -> None:
    """Upstream's defect, seen: if this fails, the collector is fixed and could be turned on again."""
    folder = Path(tempfile.mkdtemp(prefix="shop-nr-gc-"))
    with sidecars(shop_config(folder, f"{CLEANUP_SECONDS}s"), folder) as (caller, callee):
        eventually(lambda: invoke_callee() == 200, "the callee, through name resolution", timeout=30)
        eventually(lambda: caller.poll() is not None and callee.poll() is not None,
                   "both sidecars to die of the collector", timeout=30)
    assert "Host registration lost" in (folder / "caller.log").read_text()


def test_with_the_shops_configuration_sidecars_outlive_the_collectors_interval() -> None:
    folder = Path(tempfile.mkdtemp(prefix="shop-nr-off-"))
    with sidecars(shop_config(folder, None), folder) as (caller, callee):
        eventually(lambda: invoke_callee() == 200, "the callee, through name resolution", timeout=30)
        # Several renewals (every ~4 s) past the moment the collector would have struck.
        time.sleep(CLEANUP_SECONDS + 12)
        assert caller.poll() is None and callee.poll() is None, (folder / "caller.log").read_text()[-2000:]
        assert invoke_callee() == 200


def test_the_shops_resolver_collector_is_off() -> None:
    resolver = yaml.safe_load((stack.ROOT / "dapr" / "config.yaml").read_text())["spec"]["nameResolution"]
    assert resolver["component"] == "sqlite"
    assert resolver["configuration"]["cleanupInterval"] == "0"
