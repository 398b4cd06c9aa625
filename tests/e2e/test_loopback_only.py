"""The whole stack stays on loopback: nothing it does sends a packet off 127.0.0.1."""

import pytest

from tests.e2e.capture import Capture, external_interfaces


def test_no_packet_left_loopback(capture: Capture | None) -> None:
    """Runs last (see conftest): the capture covered stack start-up and every other e2e test."""
    if capture is None:
        pytest.skip("tcpdump unavailable or not root; CI sets SHOP_REQUIRE_CAPTURE and installs it")
    assert capture.processes, f"no interface was captured (interfaces up: {external_interfaces()})"
    seen = capture.stop()
    leaked = {name: lines for name, lines in seen.items() if lines}
    assert not leaked, "packets sent off loopback:\n" + "\n".join(
        f"{name}: {line}" for name, lines in leaked.items() for line in lines[:50]
    )
