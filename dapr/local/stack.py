#!/usr/bin/env python3
"""The local stack: provision and run Kafka, the database (FerretDB on PostgreSQL) and every
function beside its daprd.

    python dapr/local/stack.py provision   # build/fetch what is missing into the cache
    python dapr/local/stack.py up          # provision, start everything, wait until ready
    python dapr/local/stack.py down        # stop everything; no process or port left behind
    python dapr/local/stack.py reset       # down, then empty the database and Kafka's topics
    python dapr/local/stack.py status | logs [name]

Builds and downloads live in $SHOP_CACHE (default ~/.cache/the-shop), one folder per tool and
version, so a new clone reuses them and nothing is fetched twice. Run state (logs, data, pids)
lives in .dapr/ at the repository root. Everything listens on 127.0.0.1 only.
Standard library only: it runs before the project's virtualenv exists.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BUILD = Path(__file__).resolve().parent / "build"
CACHE = Path(os.environ.get("SHOP_CACHE", Path.home() / ".cache" / "the-shop")).expanduser()
STATE = ROOT / ".dapr"
LOGS = STATE / "logs"

KAFKA_PORT, KAFKA_CONTROLLER_PORT, DB_PORT, PG_PORT = 9092, 9093, 27017, 5433
FUNCTIONS = {"users": 8001, "products": 8002, "cart": 8003, "payments": 8004, "notifications": 8005}
SIDECAR_HTTP = {name: 3501 + i for i, name in enumerate(FUNCTIONS)}
SIDECAR_GRPC = {name: 3601 + i for i, name in enumerate(FUNCTIONS)}  # the API the functions publish through
# The sidecars' other listeners, as dapr/dapr.yaml sets them: gRPC API, internal gRPC, metrics.
SIDECAR_OTHER_PORTS = [base + i for base in (3601, 3701, 9191) for i in range(len(FUNCTIONS))]


# --- versions: read from the build files, the one place each is pinned -------------------------
def _require(go_mod: Path, module: str) -> str:
    match = re.search(rf"^\s*(?:require\s+)?{re.escape(module)}\s+v(\S+)", go_mod.read_text(), re.M)
    if not match:
        raise SystemExit(f"{module} not required in {go_mod}")
    return match.group(1)


DAPR_VERSION = _require(BUILD / "daprd" / "go.mod", "github.com/dapr/dapr")
CLI_VERSION = _require(BUILD / "cli" / "go.mod", "github.com/dapr/cli")
FERRETDB_VERSION = _require(BUILD / "ferretdb" / "go.mod", "github.com/FerretDB/FerretDB")
KAFKA_VERSION = re.search(r"<kafka.version>(.+?)</kafka.version>", (BUILD / "kafka" / "pom.xml").read_text()).group(1)

DAPRD = CACHE / f"daprd-{DAPR_VERSION}" / "daprd"
DAPR_CLI = CACHE / f"dapr-cli-{CLI_VERSION}" / "dapr"
# Keyed by our main's source too: the binary is our small main around FerretDB's package.
_FERRETDB_MAIN = hashlib.sha256((BUILD / "ferretdb" / "main.go").read_bytes()).hexdigest()[:8]
FERRETDB = CACHE / f"ferretdb-{FERRETDB_VERSION}-{_FERRETDB_MAIN}" / "ferretdb"
GIN_SQL = Path(__file__).resolve().parent / "postgres" / "ferretdb-gin.sql"
KAFKA_LIBS = CACHE / f"kafka-{KAFKA_VERSION}" / "libs"
# The CLI finds daprd at $DAPR_RUNTIME_PATH/.dapr/bin/daprd (slim mode, no `dapr init`).
RUNTIME_PATH = CACHE / f"dapr-runtime-{DAPR_VERSION}"


def say(message: str) -> None:
    print(f"[stack] {message}", flush=True)


@contextmanager
def step(name: str, report=None):
    """`name ...`, then `name: done in Ns` (through `report`, default `say`)."""
    report = report or say
    started = time.monotonic()
    report(f"{name} ...")
    yield
    report(f"{name}: done in {time.monotonic() - started:.1f}s")


def run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> None:
    result = subprocess.run(cmd, cwd=cwd, env={**os.environ, **(env or {})}, text=True, capture_output=True)
    if result.returncode != 0:
        sys.stderr.write(result.stdout[-4000:] + result.stderr[-4000:])
        raise SystemExit(f"failed: {' '.join(cmd)}")


PROGRESS_SECONDS = 20.0


def go_build(module_dir: Path, target: Path, package: str, *extra: str, env: dict[str, str] | None = None) -> None:
    """Build into a temporary name, then rename: an interrupted build never looks finished.
    A cold build takes minutes: every PROGRESS_SECONDS it says how long so far, how many modules
    it downloaded and how many packages it compiled (`go build -v` names each one)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial")
    cmd = ["go", "build", "-v", "-trimpath", *extra, "-o", str(partial), package]
    started = time.monotonic()
    process = subprocess.Popen(
        cmd, cwd=module_dir, env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(process.stderr), daemon=True)
    reader.start()
    while process.poll() is None:
        reader.join(timeout=PROGRESS_SECONDS)
        if process.poll() is None:
            downloaded = sum(1 for line in lines if line.startswith("go: downloading"))
            compiled = sum(1 for line in lines if not line.startswith("go: "))
            say(f"  {target.parent.name}: {time.monotonic() - started:.0f}s, "
                f"{downloaded} modules downloaded, {compiled} packages compiled")
    reader.join()
    if process.returncode != 0:
        sys.stderr.write("".join(lines[-60:]))
        raise SystemExit(f"failed: {' '.join(cmd)}")
    partial.rename(target)


# --- provisioning ------------------------------------------------------------------------------
def provision_daprd() -> None:
    if not DAPRD.exists():
        with step(f"daprd {DAPR_VERSION}: go build -tags allcomponents (cold: several minutes)"):
            go_build(
                BUILD / "daprd",
                DAPRD,
                "github.com/dapr/dapr/cmd/daprd",
                # allcomponents: the SQLite name resolver is only in that set.
                "-tags=allcomponents",
                f"-ldflags=-X github.com/dapr/dapr/pkg/buildinfo.version={DAPR_VERSION}",
            )
    shim = RUNTIME_PATH / ".dapr" / "bin" / "daprd"
    # The CLI cannot pass the two listen addresses, and daprd's defaults listen on every
    # interface; it also always passes a scheduler address, even when the run file sets none.
    script = (
        "#!/bin/sh\n# Generated by dapr/local/stack.py: daprd bound to loopback, no scheduler.\n"
        "skip=\n"
        "for arg; do\n"
        "  shift\n"
        '  if [ -n "$skip" ]; then skip=; continue; fi\n'
        '  if [ "$arg" = --scheduler-host-address ]; then skip=1; continue; fi\n'
        '  set -- "$@" "$arg"\n'
        "done\n"
        f'exec "{DAPRD}" "$@" --dapr-internal-grpc-listen-address 127.0.0.1 --metrics-listen-address 127.0.0.1\n'
    )
    if not shim.exists() or shim.read_text() != script:
        shim.parent.mkdir(parents=True, exist_ok=True)
        shim.write_text(script)
        shim.chmod(0o755)


def provision_cli() -> None:
    if not DAPR_CLI.exists():
        with step(f"dapr CLI {CLI_VERSION}: go build"):
            go_build(BUILD / "cli", DAPR_CLI, "github.com/dapr/cli", f"-ldflags=-X main.version={CLI_VERSION}")


def provision_ferretdb() -> None:
    if not FERRETDB.exists():
        with step(f"FerretDB {FERRETDB_VERSION} (PostgreSQL backend): go build"):
            go_build(BUILD / "ferretdb", FERRETDB, ".")


def provision_kafka() -> None:
    if KAFKA_LIBS.exists():
        return
    with step(f"Apache Kafka {KAFKA_VERSION}: broker jars from Maven Central"):
        partial = KAFKA_LIBS.with_name("libs.partial")
        shutil.rmtree(partial, ignore_errors=True)
        run(
            ["mvn", "-q", "-B", "dependency:copy-dependencies", "-DincludeScope=runtime", f"-DoutputDirectory={partial}"],
            cwd=BUILD / "kafka",
        )
        partial.rename(KAFKA_LIBS)


ATOMIC_MONGO_BUILD = BUILD / "atomic-mongo"
ATOMIC_MONGO_VERSION = re.search(
    r"<mongo-java-server.version>(.+?)</mongo-java-server.version>", (ATOMIC_MONGO_BUILD / "pom.xml").read_text()
).group(1)
_ATOMIC_MONGO_MAIN = ATOMIC_MONGO_BUILD / "src" / "main" / "java" / "theshop" / "atomicmongo" / "Main.java"
ATOMIC_MONGO = CACHE / (
    f"atomic-mongo-{ATOMIC_MONGO_VERSION}-"
    + hashlib.sha256(_ATOMIC_MONGO_MAIN.read_bytes() + (ATOMIC_MONGO_BUILD / "pom.xml").read_bytes()).hexdigest()[:8]
)


def provision_atomic_mongo() -> None:
    """The replica race's database (dapr/local/build/atomic-mongo): jars from Maven Central and
    our small main, compiled into the cache."""
    if ATOMIC_MONGO.exists():
        return
    with step(f"mongo-java-server {ATOMIC_MONGO_VERSION} (the replica race's atomic database): jars + javac"):
        partial = ATOMIC_MONGO.with_name(ATOMIC_MONGO.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        run(["mvn", "-q", "-B", "dependency:copy-dependencies", "-DincludeScope=runtime",
             f"-DoutputDirectory={partial / 'libs'}"], cwd=ATOMIC_MONGO_BUILD)
        run(["javac", "-d", str(partial / "classes"), "-cp", f"{partial / 'libs'}/*", str(_ATOMIC_MONGO_MAIN)], cwd=ROOT)
        partial.rename(ATOMIC_MONGO)


def atomic_mongo_cmd(port: int) -> list[str]:
    """An in-memory Mongo-wire server on 127.0.0.1:`port` that applies each update atomically."""
    return [java(), "-Xmx512m", "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn",
            "-cp", f"{ATOMIC_MONGO / 'classes'}:{ATOMIC_MONGO / 'libs'}/*", "theshop.atomicmongo.Main", str(port)]


def postgres_bin() -> Path:
    """Debian's PostgreSQL server programs (package `postgresql`), the newest installed."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"), key=lambda p: int(p.parent.parent.name))
    if not found:
        raise SystemExit("PostgreSQL is not installed: apt-get install postgresql (Debian's package)")
    return found[-1].parent


def provision_postgres() -> None:
    postgres_bin()


PROVISIONERS = {
    "kafka": provision_kafka,
    "postgres": provision_postgres,
    "ferretdb": provision_ferretdb,
    "daprd": provision_daprd,
    "cli": provision_cli,
}
# Parts only some suites need: provisioned by name (`provision(["atomic-mongo"])`), not by `up`.
OPTIONAL_PROVISIONERS = {"atomic-mongo": provision_atomic_mongo}


def provision(parts: list[str] | None = None) -> None:
    started = time.monotonic()
    for name in parts or PROVISIONERS:
        (PROVISIONERS | OPTIONAL_PROVISIONERS)[name]()
    say(f"provisioned in {time.monotonic() - started:.1f}s (cache: {CACHE})")


# --- processes ---------------------------------------------------------------------------------
def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def http_ok(url: str | urllib.request.Request, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return 200 <= response.status < 300
    except (urllib.error.URLError, OSError, ValueError):
        return False


def wait_until(what: str, check, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not ready after {timeout:.0f}s; logs: {LOGS}")
        time.sleep(0.3)


def wait_for_port(port: int, timeout: float) -> None:
    wait_until(f"a listener on 127.0.0.1:{port}", lambda: port_open(port), timeout)


def pid_file(name: str) -> Path:
    return STATE / "pids" / f"{name}.pid"


def spawn(name: str, cmd: list[str], env: dict[str, str] | None = None, cwd: Path = ROOT) -> int:
    """Start a long-running process in its own session, logging to .dapr/logs/<name>.log."""
    LOGS.mkdir(parents=True, exist_ok=True)
    pid_file(name).parent.mkdir(parents=True, exist_ok=True)
    with open(LOGS / f"{name}.log", "ab") as log:
        process = subprocess.Popen(
            cmd,
            cwd=cwd,
            env={**os.environ, **(env or {})},
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    pid_file(name).write_text(str(process.pid))
    return process.pid


def alive(pid: int) -> bool:
    try:
        # Reap it if it is our own child (the test fixtures start the stack in-process).
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop(name: str, grace: float = 15.0, sig: int = signal.SIGTERM) -> None:
    """SIGTERM the process (the dapr CLI then stops its apps and sidecars), then its whole group."""
    path = pid_file(name)
    if not path.exists():
        return
    pid = int(path.read_text())
    if alive(pid):
        os.kill(pid, sig)
        deadline = time.monotonic() + grace
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
    try:
        os.killpg(pid, signal.SIGKILL)  # stragglers in the group: apps, sidecars, JVM threads
    except (ProcessLookupError, PermissionError):
        pass
    path.unlink(missing_ok=True)


def command_lines() -> list[tuple[int, list[str]]]:
    """(pid, argv) of every process on the machine, from /proc."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                words = [w.decode(errors="replace") for w in (proc / "cmdline").read_bytes().split(b"\0") if w]
            except OSError:
                continue
            if words:
                found.append((int(proc.name), words))
    return found


def bare_daprd_app_env(http_port: int) -> dict[str, str]:
    """What an app beside `bare_daprd_cmd(..., http_port, ...)` is told of its sidecar, as `dapr run`
    tells it: the HTTP API (service invocation) and the gRPC API (publishing)."""
    return {"DAPR_HTTP_PORT": str(http_port), "DAPR_GRPC_PORT": str(http_port + 10)}


def bare_daprd_cmd(app_id: str, http_port: int, *, resources: Path, config: Path, app_port: int | None = None) -> list[str]:
    """A daprd of its own, without the CLI (tests, the benchmark's floor), every listener on
    loopback: HTTP on `http_port`, gRPC, internal gRPC and metrics on `http_port` + 10, 20, 30.
    Run it with DAPR_HOST_IP=127.0.0.1 in its environment."""
    return [
        str(DAPRD), "--app-id", app_id, "--mode", "standalone", "--app-protocol", "http",
        "--dapr-http-port", str(http_port), "--dapr-grpc-port", str(http_port + 10),
        "--dapr-internal-grpc-port", str(http_port + 20), "--metrics-port", str(http_port + 30),
        "--dapr-listen-addresses", "127.0.0.1", "--dapr-internal-grpc-listen-address", "127.0.0.1",
        "--metrics-listen-address", "127.0.0.1", "--resources-path", str(resources), "--config", str(config),
        "--placement-host-address", "", *(["--app-port", str(app_port)] if app_port else []),
    ]


def terminate(processes: list[subprocess.Popen], grace: float = 15.0) -> None:
    """SIGTERM each, then SIGKILL whatever has not exited after `grace` seconds."""
    for process in processes:
        process.terminate()
    deadline = time.monotonic() + grace
    for process in processes:
        try:
            process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


# --- the parts ---------------------------------------------------------------------------------
def java() -> str:
    home = os.environ.get("JAVA_HOME")
    return str(Path(home) / "bin" / "java") if home else "java"


def kafka_config(data: Path, port: int = KAFKA_PORT, controller_port: int = KAFKA_CONTROLLER_PORT) -> str:
    """server.properties for a single-node KRaft broker+controller on loopback, its log in `data`."""
    text = (Path(__file__).parent / "kafka" / "server.properties").read_text().replace("@DATA_DIR@", str(data / "log"))
    return text.replace(":9093", f":{controller_port}").replace(":9092", f":{port}")


def kafka_cmd(config: Path, data: Path) -> list[str]:
    """The broker's command line; formats its storage in `data` first if that is new."""
    classpath = f"{KAFKA_LIBS}/*"
    log4j = f"-Dlog4j2.configurationFile={Path(__file__).parent / 'kafka' / 'log4j2.yaml'}"
    if not (data / "log" / "meta.properties").exists():
        cluster_id = subprocess.run(
            [java(), "-cp", classpath, log4j, "kafka.tools.StorageTool", "random-uuid"],
            capture_output=True, text=True, check=True,
        ).stdout.strip().splitlines()[-1]
        run([java(), "-cp", classpath, log4j, "kafka.tools.StorageTool", "format", "-t", cluster_id,
             "-c", str(config), "--ignore-formatted"], cwd=ROOT)
    # C1 only (TieredStopAtLevel=1): C2's compiler threads took more CPU than the broker's own work
    # in a fresh stack's first minutes on two cores (13 of 28 CPU-s over a 300-order benchmark, the
    # request handlers 6); C1 code serves a local broker's few hundred requests a second as well.
    return [java(), "-Xms256m", "-Xmx768m", "-XX:+UseG1GC", "-XX:TieredStopAtLevel=1", "-Djava.awt.headless=true",
            log4j, "-cp", classpath, "kafka.Kafka", str(config)]


def start_kafka() -> None:
    if port_open(KAFKA_PORT):
        say(f"Kafka already listening on 127.0.0.1:{KAFKA_PORT}")
        return
    data = STATE / "kafka"
    config = STATE / "kafka.properties"
    config.write_text(kafka_config(data))
    with step("Kafka: start single-node KRaft broker+controller on 127.0.0.1"):
        spawn("kafka", kafka_cmd(config, data))
        wait_for_port(KAFKA_PORT, timeout=90)


# --- the database: FerretDB on a private PostgreSQL cluster ---------------------------------------
def as_postgres_user(cmd: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: as root, run it as Debian's `postgres` user."""
    if os.geteuid() != 0:
        return cmd
    return ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--", *cmd]


def postgres_can_reach(path: Path) -> bool:
    if os.geteuid() != 0:
        return True
    return subprocess.run(as_postgres_user(["test", "-x", str(path)]), capture_output=True).returncode == 0


def pg_data_dir() -> Path:
    """The stack's cluster: .dapr/postgres, unless (as root) the postgres user cannot reach the
    checkout, e.g. under /root; then a folder of this checkout's own under /var/tmp."""
    if os.environ.get("SHOP_PG_DATA"):
        return Path(os.environ["SHOP_PG_DATA"])
    STATE.mkdir(exist_ok=True)
    if postgres_can_reach(STATE):
        return STATE / "postgres"
    return Path("/var/tmp/the-shop") / hashlib.sha256(str(ROOT).encode()).hexdigest()[:12] / "postgres"


def postgres_cmd(data: Path, port: int) -> list[str]:
    return as_postgres_user([
        str(postgres_bin() / "postgres"), "-D", str(data), "-p", str(port),
        "-c", "listen_addresses=127.0.0.1",
        "-c", "unix_socket_directories=",  # TCP on loopback only
        # pgx (in FerretDB) caches prepared statements; a generic plan cannot match the GIN
        # indexes to the `_jsonb -> $1` key parameter (dapr/local/postgres/ferretdb-gin.sql).
        "-c", "plan_cache_mode=force_custom_plan",
        "-c", "max_connections=200",
        # Counts every statement FerretDB sends, per table: `task bench` reports the database
        # work per order by collection from it (tests/bench/statements.py).
        "-c", "shared_preload_libraries=pg_stat_statements",
        "-c", "shared_buffers=128MB",
    ])


def init_postgres(data: Path) -> None:
    """Create the cluster unless `data` holds one (a half-made one from an interrupted run goes)."""
    if (data / "PG_VERSION").exists():
        return
    shutil.rmtree(data, ignore_errors=True)
    data.mkdir(parents=True, mode=0o700)
    if os.geteuid() == 0:
        shutil.chown(data, "postgres", "postgres")
    run(as_postgres_user([str(postgres_bin() / "initdb"), "-D", str(data), "-U", "postgres",
                          "--auth=trust", "--encoding=UTF8", "--locale=C.UTF-8"]), cwd=Path("/"))


def psql(port: int, sql: str | Path, database: str = "postgres") -> str:
    source = ["-f", str(sql)] if isinstance(sql, Path) else ["-c", sql]
    result = subprocess.run(
        [str(postgres_bin() / "psql"), "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1",
         "-p", str(port), "-U", "postgres", "-d", database, *source],
        text=True, capture_output=True,
    )
    if result.returncode != 0:
        raise SystemExit(f"psql failed: {result.stderr.strip()}")
    return result.stdout


def pg_ready(port: int) -> bool:
    return subprocess.run([str(postgres_bin() / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres"]).returncode == 0


def prepare_postgres(port: int) -> None:
    """The `ferretdb` database with the GIN-index trigger (ferretdb-gin.sql) and statement
    statistics; idempotent."""
    if not psql(port, "SELECT 1 FROM pg_database WHERE datname = 'ferretdb'").strip():
        psql(port, "CREATE DATABASE ferretdb")
    psql(port, GIN_SQL, database="ferretdb")
    psql(port, "CREATE EXTENSION IF NOT EXISTS pg_stat_statements", database="ferretdb")


def ferretdb_cmd(listen_port: int, pg_port: int) -> list[str]:
    return [str(FERRETDB), "--listen-addr", f"127.0.0.1:{listen_port}",
            "--postgresql-url", f"postgres://postgres@127.0.0.1:{pg_port}/ferretdb"]


def start_private_database(data: Path, pg_port: int, db_port: int) -> list[subprocess.Popen]:
    """A throw-away PostgreSQL + FerretDB pair (the unit tests'); the caller terminates both."""
    init_postgres(data)
    log = subprocess.DEVNULL
    postgres = subprocess.Popen(postgres_cmd(data, pg_port), stdout=log, stderr=log, start_new_session=True)
    wait_until("PostgreSQL", lambda: pg_ready(pg_port), timeout=30)
    prepare_postgres(pg_port)
    ferretdb = subprocess.Popen(ferretdb_cmd(db_port, pg_port), stdout=log, stderr=log, start_new_session=True)
    wait_for_port(db_port, timeout=30)
    return [ferretdb, postgres]


def start_database() -> None:
    if os.environ.get("MONGODB_URI"):
        say("MONGODB_URI is set: using that database, not FerretDB")
        return
    if port_open(DB_PORT):
        say(f"a database already listens on 127.0.0.1:{DB_PORT}")
        return
    data = pg_data_dir()
    with step(f"PostgreSQL: start on 127.0.0.1:{PG_PORT} (data {data})"):
        init_postgres(data)
        if not port_open(PG_PORT):
            spawn("postgres", postgres_cmd(data, PG_PORT))
            wait_until("PostgreSQL", lambda: pg_ready(PG_PORT), timeout=30)
        prepare_postgres(PG_PORT)
    with step(f"FerretDB: start on 127.0.0.1:{DB_PORT}"):
        spawn("ferretdb", ferretdb_cmd(DB_PORT, PG_PORT))
        wait_for_port(DB_PORT, timeout=30)


API_TOKENS = STATE / "api-tokens.json"


def api_tokens() -> dict[str, str]:
    """The stack's two Dapr tokens, made on the first `up` and kept in .dapr/ (readable by this
    user only): DAPR_API_TOKEN, which every sidecar requires of callers of its API, and
    APP_API_TOKEN, which it sends its app, whose subscription routes refuse deliveries without it.
    daprd and the app both read them from the environment `dapr run` passes on."""
    if not API_TOKENS.exists():
        STATE.mkdir(exist_ok=True)
        made = {"DAPR_API_TOKEN": secrets.token_urlsafe(32), "APP_API_TOKEN": secrets.token_urlsafe(32)}
        descriptor = os.open(API_TOKENS, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as file:
            json.dump(made, file)
    return json.loads(API_TOKENS.read_text())


def dapr_env() -> dict[str, str]:
    """Environment for `dapr run`: our daprd in slim mode, the venv's python first on PATH, the
    stack's API tokens."""
    bin_dir = str(Path(sys.executable).parent)
    return {
        **api_tokens(),
        "DAPR_RUNTIME_PATH": str(RUNTIME_PATH),
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        # The sidecars register this address with name resolution: loopback, never the host's IP.
        "DAPR_HOST_IP": "127.0.0.1",
        "PYTHONUNBUFFERED": "1",
    }


def functions_ready() -> dict[str, bool]:
    return {name: function_ready(name) for name in FUNCTIONS}


# --- the functions: one `dapr run` each, kept running by a supervisor -----------------------------
# Each function runs as its users run it: `dapr run --app-id <name> ... -- uvicorn ...` (the same
# settings as dapr/dapr.yaml, the multi-app run file; tests/unit/test_local_ports.py holds the two
# together). The CLI exits when its app or its daprd exits, whatever the cause; the supervisor
# (`stack.py supervise`, started by `up`) then starts that function again, with backoff, and
# restarts one that stops answering. Every restart is logged in .dapr/logs/supervisor.log and
# counted by `status`.
SUPERVISOR_STATE = STATE / "supervisor.json"
# A function whose sidecar or app has not answered for this long is restarted (a hung process,
# a paused one); the first start gets the longer grace (daprd waits for Kafka, the app seeds).
UNHEALTHY_RESTART_SECONDS = 30.0
START_GRACE_SECONDS = 90.0
MAX_BACKOFF_SECONDS = 10.0


def dapr_run_cmd(name: str) -> list[str]:
    """The function beside its sidecar, as one `dapr run` (the flags dapr/dapr.yaml sets)."""
    i, port = list(FUNCTIONS).index(name), FUNCTIONS[name]
    return [
        str(DAPR_CLI), "run", "--app-id", name, "--app-port", str(port), "--app-protocol", "http",
        "--dapr-http-port", str(SIDECAR_HTTP[name]), "--dapr-grpc-port", str(SIDECAR_GRPC[name]),
        "--dapr-internal-grpc-port", str(3701 + i), "--metrics-port", str(9191 + i),
        "--dapr-listen-addresses", "127.0.0.1",
        "--resources-path", str(ROOT / "components"), "--resources-path", str(ROOT / "dapr"),
        "--config", str(ROOT / "dapr" / "config.yaml"),
        "--enable-app-health-check", "--app-health-check-path", "/readyz", "--log-level", "info",
        "--placement-host-address", "", "--scheduler-host-address", "",
        "--", "python", "-m", "uvicorn", f"functions.{name}.app:app", "--host", "127.0.0.1", "--port", str(port),
    ]


def function_alive(name: str) -> bool:
    """The sidecar and the app process answer (the supervisor's test: a database outage makes a
    function unready, which restarting it would not cure)."""
    return http_ok(f"http://127.0.0.1:{SIDECAR_HTTP[name]}/v1.0/healthz") and http_ok(
        f"http://127.0.0.1:{FUNCTIONS[name]}/healthz"
    )


def function_ready(name: str) -> bool:
    """The sidecar is up, the app is ready (its database answers), and the sidecar has seen that:
    daprd probes the app (/readyz, every 5 s) and refuses calls and deliveries to it until then."""
    if not (http_ok(f"http://127.0.0.1:{SIDECAR_HTTP[name]}/v1.0/healthz") and http_ok(
        f"http://127.0.0.1:{FUNCTIONS[name]}/readyz"
    )):
        return False
    through_sidecar = urllib.request.Request(
        f"http://127.0.0.1:{SIDECAR_HTTP[name]}/v1.0/invoke/{name}/method/healthz",
        headers={"dapr-api-token": api_tokens()["DAPR_API_TOKEN"]},
    )
    return http_ok(through_sidecar)


def kill_group(pid: int, sig: int = signal.SIGKILL) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


class Supervisor:
    """Starts every function's `dapr run` and starts again any that exits or stops answering."""

    def __init__(self) -> None:
        self.processes: dict[str, subprocess.Popen] = {}
        self.started_at: dict[str, float] = {}
        self.unhealthy_since: dict[str, float | None] = dict.fromkeys(FUNCTIONS)
        self.backoff = dict.fromkeys(FUNCTIONS, 1.0)
        self.next_start = dict.fromkeys(FUNCTIONS, 0.0)
        self.restarts = dict.fromkeys(FUNCTIONS, 0)
        self.last_event: dict[str, str] = {}
        self.stopping = False

    def log(self, name: str, message: str) -> None:
        self.last_event[name] = f"{time.strftime('%H:%M:%S')} {message}"
        say(f"{name}: {message}")

    def start(self, name: str) -> None:
        pid = spawn(f"fn-{name}", dapr_run_cmd(name), env=dapr_env())
        self.processes[name] = _Child(pid)
        self.started_at[name] = time.monotonic()
        self.unhealthy_since[name] = None

    def check(self, name: str) -> None:
        now = time.monotonic()
        child = self.processes.get(name)
        if child is None:
            if now >= self.next_start[name]:
                self.start(name)
            return
        code = child.poll()
        if code is not None:
            kill_group(child.pid)  # an app or daprd the CLI left behind
            del self.processes[name]
            self.restarts[name] += 1
            self.next_start[name] = now + self.backoff[name]
            self.log(name, f"dapr run exited (code {code}); restart #{self.restarts[name]} in {self.backoff[name]:.0f}s")
            self.backoff[name] = min(self.backoff[name] * 2, MAX_BACKOFF_SECONDS)
            return
        if function_alive(name):
            if self.unhealthy_since[name] is not None or now - self.started_at[name] > START_GRACE_SECONDS:
                self.backoff[name] = 1.0  # healthy again: the next failure restarts at once
            self.unhealthy_since[name] = None
            return
        since = self.unhealthy_since[name] = self.unhealthy_since[name] or now
        grace = START_GRACE_SECONDS if now - self.started_at[name] < START_GRACE_SECONDS else UNHEALTHY_RESTART_SECONDS
        if now - since > grace:
            self.log(name, f"not answering for {now - since:.0f}s; stopping it to start it again")
            kill_group(child.pid)

    def save(self) -> None:
        state = {name: {"pid": self.processes[name].pid if name in self.processes else None,
                        "restarts": self.restarts[name], "last": self.last_event.get(name, "")} for name in FUNCTIONS}
        SUPERVISOR_STATE.write_text(json.dumps(state, indent=1))

    def run(self) -> None:
        signal.signal(signal.SIGTERM, lambda *_: setattr(self, "stopping", True))
        signal.signal(signal.SIGINT, lambda *_: setattr(self, "stopping", True))
        say(f"supervising {', '.join(FUNCTIONS)} (pid {os.getpid()})")
        while not self.stopping:
            for name in FUNCTIONS:
                self.check(name)
            self.save()
            time.sleep(1.0)
        for child in self.processes.values():
            kill_group(child.pid, signal.SIGTERM)  # the CLI stops its app and daprd
        deadline = time.monotonic() + 15
        while any(c.poll() is None for c in self.processes.values()) and time.monotonic() < deadline:
            time.sleep(0.2)
        for name, child in self.processes.items():
            kill_group(child.pid)
            pid_file(f"fn-{name}").unlink(missing_ok=True)
        say("supervisor stopped every function")


class _Child:
    """A process `spawn` started (in its own session): poll() like Popen's."""

    def __init__(self, pid: int) -> None:
        self.pid = pid

    def poll(self) -> int | None:
        try:
            done, status = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:
            return None if alive(self.pid) else -1
        return os.waitstatus_to_exitcode(status) if done == self.pid else None


def start_functions(timeout: float) -> None:
    if all(functions_ready().values()):
        say("every function and sidecar already answers")
        return
    with step("functions: one `dapr run` per function, under the supervisor (5 apps + 5 sidecars)"):
        if not (pid_file("supervisor").exists() and alive(int(pid_file("supervisor").read_text()))):
            spawn("supervisor", [sys.executable, str(Path(__file__).resolve()), "supervise"], env=dapr_env())
        wait_until("functions and sidecars", lambda: all(functions_ready().values()), timeout)


def restart(name: str, timeout: float = 90) -> None:
    """Stop one function and its sidecar; the supervisor starts them again, the rest runs on."""
    if name not in FUNCTIONS:
        raise SystemExit(f"no function {name!r}: one of {', '.join(FUNCTIONS)}")
    with step(f"{name}: stop its dapr run; the supervisor starts it again"):
        path = pid_file(f"fn-{name}")
        if path.exists():
            kill_group(int(path.read_text()), signal.SIGTERM)
        wait_until(f"{name} to stop", lambda: not function_ready(name), timeout=30)
        wait_until(f"{name} to answer again", lambda: function_ready(name), timeout)


def up(timeout: float = 180) -> None:
    started = time.monotonic()
    provision()
    STATE.mkdir(exist_ok=True)
    start_kafka()
    start_database()
    start_functions(timeout)
    say(f"up in {time.monotonic() - started:.1f}s")
    for name, port in FUNCTIONS.items():
        say(f"{name:<14} API http://127.0.0.1:{port}/api  docs http://127.0.0.1:{port}/docs  "
            f"sidecar http://127.0.0.1:{SIDECAR_HTTP[name]}")
    say(f"Kafka 127.0.0.1:{KAFKA_PORT}  MongoDB {os.environ.get('MONGODB_URI', f'mongodb://127.0.0.1:{DB_PORT}')}")
    say(f"logs: {LOGS}")


ALL_PORTS = [KAFKA_PORT, KAFKA_CONTROLLER_PORT, DB_PORT, PG_PORT, *FUNCTIONS.values(), *SIDECAR_HTTP.values(), *SIDECAR_OTHER_PORTS]


def down() -> None:
    started = time.monotonic()
    stop("supervisor", grace=25)
    for name in [f"fn-{n}" for n in FUNCTIONS] + ["dapr-run", "ferretdb", "kafka"]:
        stop(name)
    stop("postgres", sig=signal.SIGINT)  # PostgreSQL's fast shutdown: clients are gone by now
    busy = [p for p in ALL_PORTS if port_open(p)]
    deadline = time.monotonic() + 15
    while busy and time.monotonic() < deadline:
        time.sleep(0.3)
        busy = [p for p in ALL_PORTS if port_open(p)]
    if busy:
        raise SystemExit(f"still listening after down: {busy} (started outside this checkout?)")
    say(f"down in {time.monotonic() - started:.1f}s; no port of the stack in use")


def reset() -> None:
    """Stop everything, then forget every stored document, event and registration."""
    down()
    for path in (pg_data_dir(), STATE / "kafka", STATE / "nameresolution.db"):
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    say("reset: database, Kafka topics and name registrations emptied")


def status() -> None:
    for name in ("kafka", "postgres", "ferretdb", "supervisor"):
        path = pid_file(name)
        pid = int(path.read_text()) if path.exists() else None
        say(f"{name:<14} {'running pid ' + str(pid) if pid and alive(pid) else 'STOPPED'}")
    supervised = json.loads(SUPERVISOR_STATE.read_text()) if SUPERVISOR_STATE.exists() else {}
    for name, ready in functions_ready().items():
        info = supervised.get(name, {})
        restarts = f", restarted {info['restarts']}x, last: {info['last']}" if info.get("restarts") else ""
        say(f"{name:<14} {'ready' if ready else 'NOT READY'}{restarts}")
    if port_open(DB_PORT) or os.environ.get("MONGODB_URI"):
        try:
            parked = parked_dead_letters()
        except Exception as exc:  # noqa: BLE001 - status reports, it does not fail
            say(f"dead letters: cannot read them ({exc})")
        else:
            say(f"dead letters: {len(parked)} parked" + (" — see `task dlq`" if parked else ""))


# --- dead letters (functions/common/dead_letters.py) ----------------------------------------------
def _shop_databases():
    """(function, its database) on the stack's database, or MONGODB_URI's."""
    from pymongo import MongoClient  # the venv's; stack.py itself needs only the standard library

    uri = os.environ.get("MONGODB_URI", f"mongodb://127.0.0.1:{DB_PORT}")
    client = MongoClient(uri, serverSelectionTimeoutMS=5000, tz_aware=True)
    prefix = os.environ.get("SHOP_DB_PREFIX", "shop")
    return [(name, client[f"{prefix}_{name}"]) for name in FUNCTIONS]


def parked_dead_letters() -> list[dict]:
    """Every parked dead letter of every function, oldest first, with its `function`."""
    found = []
    for name, database in _shop_databases():
        for letter in database["dead_letters"].find({"status": "parked"}):
            found.append({**letter, "function": name})
    return sorted(found, key=lambda letter: letter["lastAt"])


def replay_dead_letters(ids: list[str] | None) -> int:
    """Publish each parked dead letter (`ids`, or every one when None) to its topic again, same
    CloudEvent and id, through its publisher's sidecar; returns how many were replayed."""
    replayed = 0
    databases = dict(_shop_databases())
    token = api_tokens()["DAPR_API_TOKEN"]
    for letter in parked_dead_letters():
        if ids is not None and letter["_id"] not in ids:
            continue
        event = letter["cloudEvent"]
        publisher = event.get("source") if event.get("source") in FUNCTIONS else letter["function"]
        request = urllib.request.Request(
            f"http://127.0.0.1:{SIDECAR_HTTP[publisher]}/v1.0/publish/pubsub/{letter['topic']}",
            data=json.dumps(event).encode(),
            headers={"Content-Type": "application/cloudevents+json", "dapr-api-token": token},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10):
            pass
        databases[letter["function"]]["dead_letters"].update_one(
            {"_id": letter["_id"]}, {"$set": {"status": "replayed", "replayedAt": datetime.now(UTC)}, "$inc": {"replays": 1}}
        )
        say(f"replayed {letter['_id']} ({letter['function']}) through {publisher}'s sidecar")
        replayed += 1
    return replayed


def dlq(replay: list[str], replay_all: bool) -> None:
    if replay or replay_all:
        count = replay_dead_letters(None if replay_all else replay)
        say(f"{count} dead letter(s) replayed")
        return
    letters = parked_dead_letters()
    for letter in letters:
        data = json.dumps(letter["cloudEvent"].get("data"), ensure_ascii=False)
        say(f"{letter['function']:<14} {letter['_id']}  came {letter['receipts']}x, replayed {letter['replays']}x, "
            f"last {letter['lastAt']:%Y-%m-%d %H:%M:%S}  {data[:100]}")
    say(f"{len(letters)} dead letter(s) parked; replay: task dlq -- --replay <id> (or --all)")


def log_files() -> list[Path]:
    return sorted(LOGS.glob("*.log"), key=lambda p: p.stat().st_mtime) if LOGS.exists() else []


def logs(name: str | None, lines: int) -> None:
    for path in log_files():
        if name and name not in path.name:
            continue
        print(f"===== {path.relative_to(ROOT)}")
        print("\n".join(path.read_text(errors="replace").splitlines()[-lines:]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("provision")
    sub.add_parser("up").add_argument("--timeout", type=float, default=180)
    sub.add_parser("down")
    sub.add_parser("reset")
    sub.add_parser("supervise")
    sub.add_parser("restart").add_argument("name", choices=list(FUNCTIONS))
    sub.add_parser("status")
    dlq_parser = sub.add_parser("dlq", help="list parked dead letters, or replay them")
    dlq_parser.add_argument("--replay", nargs="+", default=[], metavar="ID")
    dlq_parser.add_argument("--all", action="store_true", help="replay every parked dead letter")
    logs_parser = sub.add_parser("logs")
    logs_parser.add_argument("name", nargs="?")
    logs_parser.add_argument("-n", "--lines", type=int, default=100)
    args = parser.parse_args()
    if args.command == "provision":
        provision()
    elif args.command == "up":
        up(args.timeout)
    elif args.command == "down":
        down()
    elif args.command == "reset":
        reset()
    elif args.command == "supervise":
        Supervisor().run()
    elif args.command == "restart":
        restart(args.name)
    elif args.command == "status":
        status()
    elif args.command == "dlq":
        dlq(args.replay, args.all)
    else:
        logs(args.name, args.lines)


if __name__ == "__main__":
    main()
