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
