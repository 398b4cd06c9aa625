"""Paired runs of the order benchmark: another commit against this checkout, alternated.

    ./task bench:compare -- --base 26d3202                 # 2 pairs of 300 orders, K = 0
    python -m tests.bench.compare --base HEAD~3 --pairs 3 --orders 200

On this machine every process's CPU per order moves together from run to run, by up to 15 %
(README, "Benchmark"): a change smaller than that is invisible in one run before and one after.
This runs `base` and this checkout in turns (base, this, base, this...), each on a stack just
started from its own tree and stopped after, the same orders at K = 0 (`tests/bench/orders.py`),
and prints every run and the mean per side, process by process.

`base` is checked out in a git worktree under the cache (`SHOP_CACHE/compare/<commit>`), removed
after. It runs with this checkout's `.venv`, so its `requirements.lock` must be the same (the
script refuses otherwise), and nothing else may run the stack meanwhile (it refuses if a port of
the stack is taken). A measurement, not a test.
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from statistics import mean

from tests.stack import stack

WARM_UP_SECONDS = 30  # after `up`: the sidecars join their consumer groups, the apps settle
PYTHON = str(stack.ROOT / ".venv" / "bin" / "python")


def git(*args: str, cwd: Path = stack.ROOT) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def checkout(base: str) -> Path:
    commit = git("rev-parse", "--verify", f"{base}^{{commit}}")
    if git("show", f"{commit}:requirements.lock") != (stack.ROOT / "requirements.lock").read_text().strip():
        sys.exit(f"{base} locks other dependencies than this checkout: its run would not use its own")
    tree = stack.CACHE / "compare" / commit[:12]
    if not tree.exists():
        git("worktree", "add", "--detach", str(tree), commit)
    venv = tree / ".venv"
    if not venv.exists():
        venv.symlink_to(stack.ROOT / ".venv")
    return tree


def stack_of(tree: Path, command: str) -> None:
    """`tree`'s own dapr/local/stack.py (its stack, its data), run with this checkout's venv."""
    subprocess.run([PYTHON, str(tree / "dapr" / "local" / "stack.py"), command], cwd=tree, check=True,
                   stdout=subprocess.DEVNULL)


def run(tree: Path, orders: int, concurrency: int, out: Path) -> dict:
    """One benchmark run on `tree`'s own stack, started for it and stopped after."""
    stack_of(tree, "up")
    try:
        time.sleep(WARM_UP_SECONDS)
        # From `tree`, so that its `functions` and `tests` are imported, not this checkout's.
        subprocess.run([PYTHON, "-m", "tests.bench.orders", "--preload", "0", "--orders", str(orders),
                        "--concurrency", str(concurrency), "--json", str(out)],
                       cwd=tree, check=True, stdout=subprocess.DEVNULL)
    finally:
        stack_of(tree, "down")
    return json.loads(out.read_text())["phases"][0]


def report(runs: list[tuple[str, dict]]) -> None:
    processes = sorted({name for _, phase in runs for name, used in phase["cpu_seconds"].items()
                        if used / phase["orders"] >= 0.0005})

    def per_order(phase: dict, name: str) -> float:
        return phase["cpu_seconds"].get(name, 0.0) / phase["orders"] * 1000

    def total(phase: dict) -> float:
        return sum(phase["cpu_seconds"].values()) / phase["orders"] * 1000

    labels = [label for label, _ in runs]
    sides = list(dict.fromkeys(labels))
    print("\nCPU ms per order by process; orders/s; latency (each run, then the mean per side)\n")
    print("| | " + " | ".join(labels) + " | " + " | ".join(f"mean {side}" for side in sides) + " |")
    print("|---" * (1 + len(labels) + len(sides)) + "|")
    rows = [(name, lambda phase, name=name: per_order(phase, name)) for name in processes]
    rows += [("total", total), ("orders/s", lambda phase: phase["orders_per_second"]),
             ("write transactions an order", lambda phase: phase["transactions"] / phase["orders"])]
    rows += [(f"POST→{what} {p} ms", lambda phase, key=key, p=p: phase[key][p])
             for what, key in (("202", "to_202_ms"), ("invoice e-mail", "to_email_ms")) for p in ("p50", "p99")]
    for name, figure in rows:
        each = [figure(phase) for _, phase in runs]
        means = [mean(figure(phase) for label, phase in runs if label == side) for side in sides]
        print(f"| {name} | " + " | ".join(f"{v:.1f}" for v in each) + " | " + " | ".join(f"{v:.1f}" for v in means) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="the commit to compare this checkout against")
    parser.add_argument("--pairs", type=int, default=2, help="runs of each side, alternated")
    parser.add_argument("--orders", type=int, default=300, help="orders per run (K = 0)")
    parser.add_argument("--concurrency", type=int, default=16, help="orders in flight at once")
    args = parser.parse_args()
    if busy := [port for port in stack.ALL_PORTS if stack.port_open(port)]:
        sys.exit(f"ports of the stack in use ({busy}): stop it first (`task down`)")

    tree = checkout(args.base)
    out = stack.CACHE / "compare" / "last-run.json"
    runs: list[tuple[str, dict]] = []
    try:
        for pair in range(1, args.pairs + 1):
            for label, side in (("base", tree), ("this", stack.ROOT)):
                print(f"[compare] pair {pair}: {label} ({side})", flush=True)
                runs.append((label, run(side, args.orders, args.concurrency, out)))
    finally:
        stack_of(tree, "reset")  # its database may live outside the tree (/var/tmp, see stack.py)
        git("worktree", "remove", "--force", str(tree))
    report(runs)
    violations = {label: phase["violations"] for label, phase in runs if sum(phase["violations"].values())}
    if violations:
        sys.exit(f"violations found: {violations}")


if __name__ == "__main__":
    main()
