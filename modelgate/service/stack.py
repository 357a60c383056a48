"""`modelgate up`: what a person needs to click through a validation, on this machine, in one command.

It starts, each in a session of its own, and prints both UIs' URLs once they answer:
- Prefect's server with its UI (`prefect server start`, port 4200), unless Prefect's settings name a server
  (PREFECT_API_URL): then it uses that one and says so;
- an MLflow server with its UI (`mlflow server`, port 5000) on the store `modelgate validate` writes by default
  (sqlite:///mlflow.db here), which the flow runs then log to over HTTP. A MLFLOW_TRACKING_URI naming a server
  (http, https, databricks) is used as it is; one naming a database gets a UI server on that database, and the
  flow runs keep the URI as set;
- `modelgate serve`: both deployments (validate-savedmodel, validate-new-versions) and the runner that starts
  their flow runs, with its spare keeper (a spare warms up only while no validation runs under it).

Ctrl-C, SIGTERM or SIGHUP stop everything it started: the runner first (it records its flow runs' end on a live
Prefect server), then the servers, each by its process group, and then whatever is left of their process trees.
A terminal's Ctrl-C reaches only this process (the others are in sessions of their own, so nothing stops before
the runner did). This process is a child subreaper: a process whose parent ended (uvicorn under `mlflow server`,
a flow run under the runner) is still its descendant, and is found and stopped. Should this process be killed
outright, its children get SIGTERM from the kernel (the parent-death signal). A second Ctrl-C kills at once.

The module imports nothing heavy at its top: `modelgate up --help` stays instant.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import functools
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from modelgate.execution.os_sandbox import PR_SET_CHILD_SUBREAPER, prctl
from modelgate.service.prefect_server import _own_session_dying_with_parent
from modelgate.tracking.store_template import prepare_store

EXIT_STOPPED, EXIT_ERROR = 0, 2
PREFECT_PORT, MLFLOW_PORT = 4200, 5000
LOCAL_STORE = "sqlite:///mlflow.db"  # modelgate validate's default store (modelgate.request.default_tracking_uri)
DEPLOYMENTS = ("validate-savedmodel", "validate-new-versions")
HOST = "127.0.0.1"
RUNNER = "modelgate serve"
STARTUP_TIMEOUT_S = 300  # Prefect's server and MLflow's first migration, on a loaded 2-core machine
RUNNER_STOP_S = 20  # `modelgate serve` bounds its own stop at about 10 s (flows/serve.py)
SERVER_STOP_S = 10
POLL_S = 0.2
CLOCK_SKEW = timedelta(seconds=30)  # between this machine and a Prefect server elsewhere
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
# MLflow tracking URIs that name a server with a UI of its own: nothing to start for them.
SERVER_SCHEMES = ("http", "https", "databricks", "databricks-uc")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--prefect-port", type=int, metavar="PORT",
                        help=f"port of Prefect's server and UI (default {PREFECT_PORT}, else a free one; 0: a free one)")
    parser.add_argument("--mlflow-port", type=int, metavar="PORT",
                        help=f"port of MLflow's server and UI (default {MLFLOW_PORT}, else a free one; 0: a free one)")
    parser.add_argument("--backend-store-uri", metavar="URI", default=LOCAL_STORE,
                        help=f"MLflow's store, unless MLFLOW_TRACKING_URI names one (default: {LOCAL_STORE})")
    parser.add_argument("--logs", metavar="DIR", default="modelgate-out/up",
                        help="where the servers' logs go (default: modelgate-out/up)")
    # `modelgate serve`'s own options, passed on to it.
    parser.add_argument("--models", metavar="NAME,NAME", default="", help="registered models the schedule watches")
    parser.add_argument("--base-paths", metavar="DIR,DIR", default="", help="TF Serving base paths the schedule watches")
    parser.add_argument("--cron", default="*/15 * * * *", help="schedule of validate-new-versions")
    parser.add_argument("--settings", metavar="JSON", default="{}", help="validation request fields for each version")
    parser.add_argument("--limit", type=int, default=2, help="flow runs at once")


class StackError(Exception):
    """What keeps the stack from starting, in words for the user."""


class Stopped(Exception):
    """A stop was asked (a signal) while the stack was starting."""


@dataclass
class Started:
    name: str
    process: subprocess.Popen
    log: Path | None = None

    def said(self) -> str:
        return f"; its log: {self.log}" if self.log else ""


class Stack:
    def __init__(self, console, debug: bool = False) -> None:
        self.console = console
        self.debug = debug
        self.started: list[Started] = []
        self.signals = 0  # stop signals received: the first stops in order, the next kills at once

    # Signals.
    def _on_signal(self, signum, frame) -> None:
        self.signals += 1

    def _check(self) -> None:
        if self.signals:
            raise Stopped

    def install_signal_handlers(self) -> None:
        for signum in STOP_SIGNALS:
            signal.signal(signum, self._on_signal)

    # Starting.
    def start(self, name: str, argv: list[str], env: dict[str, str], log: Path | None) -> Started:
        prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up before the fork
        if log:
            log.parent.mkdir(parents=True, exist_ok=True)
        output = open(log, "ab") if log else None  # the child keeps its own copy: closed here below
        try:
            process = subprocess.Popen(
                argv, env=env, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT if output else None,
                preexec_fn=functools.partial(_own_session_dying_with_parent, prctl),
            )
        finally:
            if output:
                output.close()
        started = Started(name, process, log)
        self.started.append(started)
        return started

    def wait_until(self, condition, what: str, started: list[Started], timeout_s: float = STARTUP_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        while not condition():
            self._check()
            for each in started:
                if each.process.poll() is not None:
                    raise StackError(f"{each.name} exited with code {each.process.returncode}{each.said()}")
            if time.monotonic() > deadline:
                raise StackError(f"{what}: not within {timeout_s:.0f} s" + "".join(each.said() for each in started))
            time.sleep(POLL_S)

    # Running.
    def watch(self) -> None:
        """Until a stop signal, or until something it started ends by itself (an error)."""
        while not self.signals:
            for each in self.started:
                if each.process.poll() is not None:
                    raise StackError(f"{each.name} exited with code {each.process.returncode}{each.said()}")
            time.sleep(POLL_S)

    # Stopping.
    def stop(self) -> None:
        """The runner first, then the servers, each by its process group: SIGTERM, and SIGKILL for what is left
        after a grace; then whatever else is left of their trees. A second signal ends the graces at once."""
        import psutil

        before = self.signals
        tree = _descendants()  # flow runs leave the runner's process group: remember them while it lives
        runners = [each for each in self.started if each.name == RUNNER]
        servers = [each for each in self.started if each.name != RUNNER]
        for group, grace in ((runners, RUNNER_STOP_S), (servers, SERVER_STOP_S)):
            if not group:
                continue
            tree += _descendants()
            members = [*_processes([each.process.pid for each in group]), *_in_groups(tree, group)]
            for each in group:
                _signal_group(each.process, signal.SIGTERM)
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline and self.signals == before:
                _, alive = psutil.wait_procs(members, timeout=0.1)  # reaps those that are its children
                if not alive:
                    break
            for each in group:
                _signal_group(each.process, signal.SIGKILL)
            psutil.wait_procs(members, timeout=5)
            for each in group:
                each.process.poll()
        left = {process.pid: process for process in tree + _descendants()}
        for process in left.values():
            with contextlib.suppress(psutil.Error):
                process.kill()
        psutil.wait_procs(list(left.values()), timeout=5)  # and reaped: a subreaper's orphans are its children


def _processes(pids: list[int]) -> list:
    import psutil

    found = []
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            found.append(psutil.Process(pid))
    return found


def _in_groups(processes: list, group: list[Started]) -> list:
    """Those of `processes` in the process group of one of `group` (each leads its own)."""
    import psutil

    leaders = {each.process.pid for each in group}
    members = []
    for process in processes:
        with contextlib.suppress(psutil.Error, OSError):
            if os.getpgid(process.pid) in leaders and process.pid not in leaders:
                members.append(process)
    return members


def _descendants() -> list:
    import psutil

    with contextlib.suppress(psutil.Error):
        return psutil.Process().children(recursive=True)
    return []


def _signal_group(process: subprocess.Popen, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signum)  # each started its own session: its group's id is its pid


# Addresses.
def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


def _port_free(port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((HOST, port))
        except OSError:
            return False
    return True


def _port(asked: int | None, default: int, flag: str, console) -> int:
    """The port asked for; the default one, or a free one where the default is taken; a taken port asked for is
    an error."""
    if asked == 0:
        return _free_port()
    if asked is not None:
        if not _port_free(asked):
            raise StackError(f"{flag} {asked}: the port is taken")
        return asked
    if _port_free(default):
        return default
    port = _free_port()
    console.note(f"port {default} is taken: using {port} ({flag} chooses)")
    return port


def _http_ok(url: str, headers: dict[str, str] | None = None) -> bool:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=5) as response:
            return response.status == 200
    except (OSError, ValueError):
        return False


def _served_since(api_url: str, since: datetime, headers: dict[str, str]) -> bool:
    """Whether the runner has (re)created both deployments since it started: a server that ran `up` before
    still lists them from then."""
    request = urllib.request.Request(f"{api_url}/deployments/filter", data=json.dumps({}).encode(), method="POST",
                                     headers={"Content-Type": "application/json", **headers})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            deployments = json.load(response)
    except (OSError, ValueError):
        return False
    fresh = {d["name"] for d in deployments if datetime.fromisoformat(d["updated"]) >= since - CLOCK_SKEW}
    return set(DEPLOYMENTS) <= fresh


def _prefect_settings() -> tuple[str | None, str | None, str | None]:
    """The Prefect server Prefect's settings name (environment, profile, prefect.toml), its UI and its API key."""
    from prefect.settings import PREFECT_API_KEY, PREFECT_API_URL, PREFECT_UI_URL

    api_url = PREFECT_API_URL.value()
    if not api_url:
        return None, None, None
    key = PREFECT_API_KEY.value()  # a str here, a pydantic SecretStr in some releases
    key = key.get_secret_value() if hasattr(key, "get_secret_value") else key
    return api_url, PREFECT_UI_URL.value() or api_url.removesuffix("/api"), key or None


def up(args: argparse.Namespace, console) -> int:
    """Start the stack, print its URLs, and keep it until a stop signal; 0 once stopped as asked, 2 when something
    would not start or ended by itself."""
    try:
        request_fields = json.loads(args.settings)
    except json.JSONDecodeError as exc:
        console.error(f"--settings is not JSON: {exc}")
        return EXIT_ERROR
    if not isinstance(request_fields, dict):
        console.error("--settings is a JSON object of validation request fields")
        return EXIT_ERROR
    prctl(PR_SET_CHILD_SUBREAPER, 1)
    stack = Stack(console, debug=getattr(args, "debug", False))
    stack.install_signal_handlers()
    try:
        _start(stack, args)
        stack.watch()
        return EXIT_STOPPED
    except Stopped:
        return EXIT_STOPPED
    except (StackError, OSError) as exc:
        console.error(str(exc))
        return EXIT_ERROR
    finally:
        if stack.started:
            console.note("stopping what `modelgate up` started …")
        stack.stop()
        if stack.started:
            console.note("stopped")


def _start(stack: Stack, args: argparse.Namespace) -> None:
    console = stack.console
    logs = Path(args.logs).resolve()
    base = {key: value for key, value in os.environ.items()}
    env: dict[str, str] = {}  # what the runner and its flow runs are told
    waiting: list[tuple[Started, str]] = []

    api_url, ui_url, api_key = _prefect_settings()
    if api_url:
        console.note(f"Prefect: using the server PREFECT_API_URL names, {api_url} (not started here)")
        prefect_ui = ui_url
        if not _http_ok(f"{api_url}/health", {"Authorization": f"Bearer {api_key}"} if api_key else None):
            console.note(f"Prefect: {api_url}/health does not answer (yet?); unset PREFECT_API_URL for a server "
                         "started here")
    else:
        port = _port(args.prefect_port, PREFECT_PORT, "--prefect-port", console)
        prefect_ui, api_url = f"http://{HOST}:{port}", f"http://{HOST}:{port}/api"
        level = "INFO" if stack.debug else "WARNING"
        server = stack.start(
            "Prefect's server", [sys.executable, "-m", "prefect", "server", "start", "--host", HOST, "--port", str(port)],
            # The UI asks the API at PREFECT_UI_API_URL, else at the settings' port (4200), not at --port.
            {**base, "PREFECT_UI_API_URL": api_url, "PREFECT_CLI_PROMPT": "false",
             "PREFECT_SERVER_LOGGING_LEVEL": level, "PREFECT_LOGGING_LEVEL": level},
            logs / "prefect-server.log",
        )
        waiting.append((server, f"{api_url}/health"))
        env["PREFECT_UI_URL"] = prefect_ui
    env["PREFECT_API_URL"] = api_url

    configured = os.environ.get("MLFLOW_TRACKING_URI", "")
    scheme = urllib.parse.urlparse(configured).scheme
    if configured and scheme in SERVER_SCHEMES:
        console.note(f"MLflow: using the server MLFLOW_TRACKING_URI names, {configured} (not started here)")
        mlflow_ui = configured if scheme.startswith("http") else None
        if mlflow_ui and not _http_ok(f"{mlflow_ui.rstrip('/')}/health"):
            console.note(f"MLflow: {mlflow_ui} does not answer (yet?); unset MLFLOW_TRACKING_URI for a server "
                         "started here")
        tracking_uri, store = configured, None
    else:
        store = configured or args.backend_store_uri
        prepare_store(store)  # a new SQLite store: a copy of one migrated once, not the server's migrations again
        port = _port(args.mlflow_port, MLFLOW_PORT, "--mlflow-port", console)
        mlflow_ui = f"http://{HOST}:{port}"
        server = stack.start(
            "MLflow's server", [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", store,
                                "--host", HOST, "--port", str(port), "--workers", "1"],
            base, logs / "mlflow-server.log",
        )
        waiting.append((server, f"{mlflow_ui}/health"))
        # A store of the user's (MLFLOW_TRACKING_URI) stays theirs; the default store is reached through its server,
        # so that runs and versions have URLs and artifacts go where its UI serves them from.
        tracking_uri = configured or mlflow_ui
        if configured:
            console.note(f"MLflow: flow runs log to MLFLOW_TRACKING_URI, {configured}; a UI server on it starts here")
    env["MLFLOW_TRACKING_URI"] = tracking_uri

    servers = [server for server, _ in waiting]
    for server, health in waiting:
        stack.wait_until(lambda health=health: _http_ok(health), f"{server.name} answering at {health}", servers)
    for server, _ in waiting:
        console.note(f"{server.name} started{server.said()}")
    console.note(f"Prefect UI: {prefect_ui}")
    console.note(f"MLflow UI: {mlflow_ui}" + (f" (store: {store})" if store else "") if mlflow_ui
                 else f"MLflow: {tracking_uri}")

    since = datetime.now(UTC)
    serve = [sys.executable, "-m", "modelgate.service.cli", *(["--debug"] if stack.debug else []), "serve",
             "--models", args.models, "--base-paths", args.base_paths, "--cron", args.cron,
             "--settings", args.settings, "--limit", str(args.limit)]
    runner = stack.start(RUNNER, serve, {**base, **env}, None)  # its lines go to this terminal
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        stack.wait_until(lambda: _served_since(api_url, since, headers), "the deployments served", [runner])
    except StackError:
        if runner.process.poll() is not None:
            raise
        console.note(f"the deployments did not show on the Prefect server within {STARTUP_TIMEOUT_S} s; "
                     "modelgate serve still runs")  # a server out of reach of this check (another clock, say)
    else:
        console.note(f"Deployments: {prefect_ui}/deployments (validate-savedmodel's Run button opens its form)")
    console.note("Ready. Ctrl-C stops everything started here.")
