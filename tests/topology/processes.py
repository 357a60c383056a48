"""Real server processes on loopback for the topology: started, awaited, killed like a dying container, stopped."""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import psutil

STOP_GRACE_S = 20


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until(condition, timeout_s: float, what: str, poll_s: float = 0.5, diagnose=lambda: ""):
    """Poll condition() until it returns something truthy; fail naming what never happened."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout_s:.0f} s\n{diagnose()}")
        time.sleep(poll_s)


def http_ok(url: str, context: ssl.SSLContext | None = None) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5, context=context) as response:
            return response.status == 200
    except OSError:
        return False


def _kill_all(processes: list[psutil.Process]) -> None:
    """SIGKILL each process; one that has already exited is no error."""
    for process in processes:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass


class Service:
    """One long-running command with its own log; stop() ends it and every process it started."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], cwd: Path, log: Path):
        self.name, self.argv, self.env, self.cwd, self.log = name, argv, env, cwd, log
        self.process: subprocess.Popen | None = None

    def start(self) -> Service:
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(self.argv, cwd=self.cwd, env=self.env, stdout=log,
                                            stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def tail(self, chars: int = 4000) -> str:
        return f"--- {self.name} log ({self.log}) ---\n" + self.log.read_text(errors="replace")[-chars:]

    def wait_healthy(self, url: str, timeout_s: float = 180, context: ssl.SSLContext | None = None) -> None:
        def healthy():
            if not self.running():
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}\n{self.tail()}")
            return http_ok(url, context)

        wait_until(healthy, timeout_s, f"{self.name} healthy at {url}", diagnose=self.tail)

    def _tree(self) -> list[psutil.Process]:
        try:
            parent = psutil.Process(self.process.pid)
            return [parent, *parent.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def kill(self) -> None:
        """SIGKILL to the process and all its descendants at once, as when its container or machine dies."""
        _kill_all(self._tree())
        self.process.wait(STOP_GRACE_S)

    def stop(self) -> None:
        if self.process is None:
            return
        tree = self._tree()  # flow runs leave the worker's process group: remember them before it exits
        if self.running():
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                pass
        _kill_all(tree)
        self.process.wait(STOP_GRACE_S)


def postgres_bindir() -> Path | None:
    """Debian keeps the server binaries out of PATH, under /usr/lib/postgresql/<major>/bin."""
    found = shutil.which("pg_ctl")
    if found:
        return Path(os.path.realpath(found)).parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(Path(p).parts[-3]))
    return Path(candidates[-1]).parent if candidates else None


class PostgresCluster:
    """A throw-away cluster on a free loopback port; trust authentication, as only loopback reaches it.

    PostgreSQL refuses to run as root, so under root (CI) it runs as the `postgres` user the package creates,
    in a directory of its own outside pytest's root-only temporary folders.
    """

    def __init__(self, bindir: Path, user: str):
        self.bindir, self.user = bindir, user
        self.port = free_port()
        self.directory = Path(tempfile.mkdtemp(prefix="modelgate-postgres-"))
        self.data = self.directory / "data"
        self.log = self.directory / "postgres.log"
        self._as_owner: list[str] = []
        if os.geteuid() == 0:
            shutil.chown(self.directory, "postgres")
            self._as_owner = ["runuser", "-u", "postgres", "--"]

    def _run(self, *argv: str, stdin: str | None = None, as_owner: bool = True) -> subprocess.CompletedProcess:
        prefix = self._as_owner if as_owner else []
        result = subprocess.run([*prefix, *argv], input=stdin, capture_output=True, text=True, timeout=120,
                                cwd=self.directory)
        if result.returncode:
            log = self.log.read_text() if self.log.exists() else ""
            raise RuntimeError(f"{' '.join(argv)} failed: {result.stdout}{result.stderr}{log[-3000:]}")
        return result

    def start(self) -> None:
        self._run(str(self.bindir / "initdb"), "-D", str(self.data), "-U", self.user, "--auth=trust", "-E", "UTF8")
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.directory}"
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-o", options, "-l", str(self.log),
                  "-w", "-t", "60", "start")

    def run_sql_file(self, path: Path) -> None:
        self._run(str(self.bindir / "psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", self.user,
                  "-d", "postgres", "-v", "ON_ERROR_STOP=1", "-q", stdin=path.read_text(), as_owner=False)

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.directory, ignore_errors=True)
