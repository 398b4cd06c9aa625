"""The local run file's ports: what `task up` waits for and `task down` checks are the ports
dapr/dapr.yaml gives, and none is where the kernel picks client source ports."""

from pathlib import Path

import yaml

from tests.stack import stack

RUN_FILE = Path(__file__).resolve().parents[2] / "dapr" / "dapr.yaml"
EPHEMERAL = range(32768, 61000)  # Linux's default ip_local_port_range


def test_the_stack_knows_every_port_of_the_run_file():
    apps = {app["appID"]: app for app in yaml.safe_load(RUN_FILE.read_text())["apps"]}
    assert {name: app["appPort"] for name, app in apps.items()} == stack.FUNCTIONS
    assert {name: app["daprHTTPPort"] for name, app in apps.items()} == stack.SIDECAR_HTTP
    listeners = [
        app[key]
        for app in apps.values()
        for key in ("appPort", "daprHTTPPort", "daprGRPCPort", "daprInternalGRPCPort", "metricsPort")
    ]
    assert len(set(listeners)) == len(listeners), "two listeners share a port"
    assert sorted(listeners) == sorted(set(stack.ALL_PORTS) - {stack.KAFKA_PORT, stack.KAFKA_CONTROLLER_PORT, stack.DB_PORT, stack.PG_PORT})
    assert not [port for port in stack.ALL_PORTS if port in EPHEMERAL]


def flags(cmd: list[str]) -> dict[str, str | None]:
    """`--flag value` / `--flag` pairs of a `dapr run` command line, up to `--`."""
    args = cmd[: cmd.index("--")]
    found: dict[str, str | None] = {}
    for i, arg in enumerate(args):
        if arg.startswith("--"):
            value = args[i + 1] if i + 1 < len(args) and not args[i + 1].startswith("--") else None
            found[arg] = f"{found[arg]},{value}" if arg in found else value
    return found


def test_each_functions_dapr_run_says_what_the_run_file_says():
    """`task up` runs one `dapr run` per function (so one can restart alone); users with their own
    Dapr run dapr/dapr.yaml. Both must start the same sidecars."""
    run_file = yaml.safe_load(RUN_FILE.read_text())
    common = run_file["common"]
    for app in run_file["apps"]:
        cmd = stack.dapr_run_cmd(app["appID"])
        given = flags(cmd)
        assert given["--app-id"] == app["appID"]
        for flag, key in (("--app-port", "appPort"), ("--dapr-http-port", "daprHTTPPort"), ("--dapr-grpc-port", "daprGRPCPort"),
                          ("--dapr-internal-grpc-port", "daprInternalGRPCPort"), ("--metrics-port", "metricsPort")):
            assert given[flag] == str(app[key]), flag
        assert given["--dapr-listen-addresses"] == common["apiListenAddresses"]
        assert given["--app-protocol"] == common["appProtocol"]
        assert given["--app-health-check-path"] == common["appHealthCheckPath"] and "--enable-app-health-check" in given
        assert given["--config"] == str((RUN_FILE.parent / common["configFilePath"]).resolve())
        assert given["--resources-path"].split(",") == [str((RUN_FILE.parent / p).resolve()) for p in common["resourcesPaths"]]
        assert cmd[cmd.index("--") + 1:] == app["command"]
