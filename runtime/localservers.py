"""Private Mosquitto and PostgreSQL servers started from the system's binaries.

Used by the test harness and by the one-command demo: each server lives in its own data
directory on a free loopback port, so it can be stopped, killed and restarted without touching
the machine's shared services. PostgreSQL refuses to run as root, so as root the server runs as
the ``postgres`` user while clients keep running as root.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

PG_BIN_CANDIDATES = (
    "/usr/lib/postgresql/17/bin",
    "/usr/lib/postgresql/16/bin",
    "/usr/lib/postgresql/15/bin",
)


class LocalServerError(RuntimeError):
    """A private server could not be found, started or stopped."""


def free_port() -> int:
    """A port free now, below the kernel's ephemeral range: a port the kernel hands out itself
    can be taken by any outgoing connection before our server binds it (seen in CI)."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32_768
    for _ in range(200):
        port = random.randrange(max(1024, low - 12_000), low)  # noqa: S311 (not a secret)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise LocalServerError("no free port below the ephemeral range")


def wait_for_port(host: str, port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.2):
            return
        time.sleep(0.05)
    raise LocalServerError(f"nothing listens on {host}:{port} after {timeout}s")


def end_process(process: subprocess.Popen[bytes] | None, signum: int) -> None:
    """Send ``signum`` to a running server process and reap it; SIGKILL if it lingers."""
    if process is None or process.poll() is not None:
        return
    process.send_signal(signum)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=5)


def find_mosquitto() -> str:
    for candidate in (shutil.which("mosquitto"), "/usr/sbin/mosquitto"):
        if candidate and Path(candidate).exists():
            return candidate
    raise LocalServerError("mosquitto not found: apt-get install -y mosquitto mosquitto-clients")


def find_pg_bin() -> Path:
    for candidate in PG_BIN_CANDIDATES:
        if (Path(candidate) / "initdb").exists():
            return Path(candidate)
    raise LocalServerError("PostgreSQL server binaries not found: apt-get install -y postgresql")


@dataclass
class MosquittoServer:
    """A private broker; ``extra_conf`` lines are appended to its config."""

    directory: Path
    port: int = field(default_factory=free_port)
    extra_conf: list[str] = field(default_factory=list)
    persistence: bool = False
    host: str = "127.0.0.1"
    _process: subprocess.Popen[bytes] | None = None

    @property
    def conf_path(self) -> Path:
        return self.directory / "mosquitto.conf"

    def write_conf(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        lines = [
            f"listener {self.port} {self.host}",
            "allow_anonymous true",
            # Mosquitto's default queue cap silently drops QoS 1 bursts to slow subscribers.
            "max_queued_messages 0",
            "max_inflight_messages 0",
            # As root Mosquitto would drop to its own user and lose access to our directory.
            *(["user root"] if os.geteuid() == 0 else []),
            f"persistence {'true' if self.persistence else 'false'}",
            f"persistence_location {self.directory}/",
            "autosave_interval 1",
            f"log_dest file {self.directory}/mosquitto.log",
            "log_type error",
            "log_type warning",
            "log_type notice",
            *self.extra_conf,
        ]
        if any(line.startswith("listener") for line in self.extra_conf):
            lines = lines[1:]
            if not any("allow_anonymous" in line for line in self.extra_conf):
                lines = [line for line in lines if line != "allow_anonymous true"]
        self.conf_path.write_text("\n".join(lines) + "\n", encoding="utf-8")

    def start(self, timeout: float = 10.0) -> None:
        self.write_conf()
        with (self.directory / "stdout.log").open("ab") as log:
            self._process = subprocess.Popen(  # noqa: S603 - fixed binary, our own config
                [find_mosquitto(), "-c", str(self.conf_path)], stdout=log, stderr=log
            )
        try:
            wait_for_port(self.host, self.port, timeout)
        except LocalServerError:
            self.stop()
            raise

    def stop(self, *, kill: bool = False) -> None:
        process, self._process = self._process, None
        end_process(process, signal.SIGKILL if kill else signal.SIGTERM)

    def restart(self) -> None:
        self.stop()
        self.start()

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None


def server_directory(prefix: str) -> Path:
    """A new directory the server's own user can reach (pytest's tmp dirs are root-only)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    return path


@dataclass
class PostgresServer:
    """A private PostgreSQL cluster in ``directory`` on a free port (trust auth, loopback).

    As root, ``directory`` must be reachable by the ``postgres`` user: see ``server_directory``.
    """

    directory: Path
    port: int = field(default_factory=free_port)
    host: str = "127.0.0.1"

    @property
    def data_dir(self) -> Path:
        return self.directory / "pgdata"

    def _as_owner(self, argv: list[str]) -> None:
        if os.geteuid() == 0:
            argv = ["su", "postgres", "-s", "/bin/sh", "-c", " ".join(_quote(a) for a in argv)]
        result = subprocess.run(argv, capture_output=True, text=True, check=False)  # noqa: S603
        if result.returncode != 0:
            raise LocalServerError(f"{argv[0]} failed: {result.stderr.strip() or result.stdout}")

    def init(self) -> None:
        if (self.data_dir / "PG_VERSION").exists():
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self.directory, "postgres", "postgres")
        bin_dir = find_pg_bin()
        self._as_owner(
            [
                str(bin_dir / "initdb"),
                "-D", str(self.data_dir),
                "-U", "postgres",
                "-A", "trust",
                "--no-sync",
                "-E", "UTF8",
                "--locale=C.UTF-8",
            ]
        )  # fmt: skip

    def start(self, timeout: float = 30.0) -> None:
        self.init()
        bin_dir = find_pg_bin()
        options = (
            f"-p {self.port} -k {self.directory} -c listen_addresses={self.host} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
            "-c max_connections=200"
        )
        self._as_owner(
            [
                str(bin_dir / "pg_ctl"),
                "-D", str(self.data_dir),
                "-w", "-t", str(int(timeout)),
                "-l", str(self.directory / "postgres.log"),
                "-o", options,
                "start",
            ]
        )  # fmt: skip

    def stop(self, *, mode: str = "fast") -> None:
        if not (self.data_dir / "postmaster.pid").exists():
            return
        bin_dir = find_pg_bin()
        self._as_owner(
            [str(bin_dir / "pg_ctl"), "-D", str(self.data_dir), "-w", "-m", mode, "stop"]
        )

    def restart(self) -> None:
        # pg_ctl restart would reuse stale -o options; stop then start.
        self.stop()
        self.start()

    def dsn(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@{self.host}:{self.port}/{dbname}"


def _quote(arg: str) -> str:
    return "'" + arg.replace("'", "'\"'\"'") + "'"


@dataclass
class LiteTimescaleServer:
    """PostgreSQL 17 + TimescaleDB compiled to WASM (``deploy/timescale-lite``), served over
    the wire protocol. Only for tests of the TimescaleDB path: one connection at a time, no
    COPY FROM STDIN, background jobs never run (call them)."""

    directory: Path
    port: int = field(default_factory=free_port)
    host: str = "127.0.0.1"
    _process: subprocess.Popen[bytes] | None = None

    @staticmethod
    def script() -> Path:
        return Path(__file__).resolve().parents[1] / "deploy" / "timescale-lite" / "server.mjs"

    def start(self, timeout: float = 60.0) -> None:
        node = shutil.which("node")
        script = self.script()
        if node is None or not (script.parent / "node_modules").exists():
            raise LocalServerError("node and deploy/timescale-lite/node_modules are needed "
                                   "(scripts/setup.sh installs them)")  # fmt: skip
        self.directory.mkdir(parents=True, exist_ok=True)
        with (self.directory / "server.log").open("ab") as log:
            self._process = subprocess.Popen(  # noqa: S603 - fixed binary, our own script
                [node, str(script), str(self.port)], stdout=log, stderr=log
            )
        try:
            wait_for_port(self.host, self.port, timeout)
        except LocalServerError:
            self.stop()
            raise

    def stop(self) -> None:
        process, self._process = self._process, None
        end_process(process, signal.SIGTERM)

    def dsn(self) -> str:
        return f"postgresql://postgres:lite@{self.host}:{self.port}/postgres?sslmode=disable"
