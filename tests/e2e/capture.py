"""Packet capture on every non-loopback interface, to prove the stack stays on loopback."""

import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path


def external_interfaces() -> list[str]:
    """Every interface that is up, except loopback: where a stray packet would leave the host."""
    names = []
    for path in sorted(Path("/sys/class/net").iterdir()):
        if path.name == "lo":
            continue
        state = (path / "operstate").read_text().strip() if (path / "operstate").exists() else "unknown"
        flags = int((path / "flags").read_text(), 16) if (path / "flags").exists() else 0
        if state == "up" or (state == "unknown" and flags & 0x1):  # IFF_UP
            names.append(path.name)
    return names


@dataclass
class Capture:
    folder: Path
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)

    @staticmethod
    def available() -> bool:
        return shutil.which("tcpdump") is not None and os.geteuid() == 0

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        for name in external_interfaces():
            pcap = self.folder / f"{name}.pcap"
            # -Q out: what this host sends; -U: write each packet at once, nothing lost at stop.
            self.processes[name] = subprocess.Popen(
                ["tcpdump", "-i", name, "-Q", "out", "-nn", "-U", "-w", str(pcap)],
                stdout=subprocess.DEVNULL,
                stderr=open(self.folder / f"{name}.tcpdump.log", "wb"),
            )
        time.sleep(1.0)  # tcpdump needs a moment before it captures
        for name, process in self.processes.items():
            if process.poll() is not None:
                raise RuntimeError(f"tcpdump on {name} exited: {(self.folder / f'{name}.tcpdump.log').read_text()}")

    def stop(self) -> dict[str, list[str]]:
        """Stop capturing; the packets seen on each interface, one decoded line each."""
        seen: dict[str, list[str]] = {}
        for name, process in self.processes.items():
            process.send_signal(signal.SIGINT)
            process.wait(10)
            decoded = subprocess.run(
                ["tcpdump", "-nn", "-r", str(self.folder / f"{name}.pcap")], capture_output=True, text=True
            )
            seen[name] = [line for line in decoded.stdout.splitlines() if line.strip()]
        self.processes.clear()
        return seen
