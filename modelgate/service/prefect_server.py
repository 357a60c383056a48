"""Prefect's ephemeral server for one command: started first thing, out of reach of the terminal's Ctrl-C.

The server is Prefect's own app (`prefect.server.api.server:create_app` under uvicorn, as Prefect's
SubprocessASGIServer runs it), but the command starts it itself, before it imports Prefect, for two reasons:
- Time. The server takes seconds to come up, and so does importing Prefect, MLflow and the flow in the command:
  started first, the two overlap (on two cores, most of the server's start-up is free). The command then
  reaches the server through PREFECT_API_URL, so it never imports Prefect's server package (a third of its
  own import time) as Prefect's client does to start one. Whether Prefect's settings name a server of the
  user's (a profile, prefect.toml, .env) is known only once Prefect is imported: then this one is stopped.
- Signals. A terminal sends SIGINT to its whole foreground process group, and a server in the command's group
  stopped at once on Ctrl-C, while Prefect's engine then spent minutes retrying to record the interrupted
  flow run on a server that was gone. Here the server has a session of its own: the command is interrupted,
  records the crash on a live server, and stops the server as it exits; should the command be killed
  outright, the kernel stops the server with it (the parent-death signal).
The socket is bound here and handed to uvicorn (`--fd`), so no other process can take the port in between.
"""

from __future__ import annotations

import atexit
import ctypes
import functools
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

PR_SET_PDEATHSIG = 1
STARTUP_TIMEOUT_SETTING = "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"
# Prefect's 20 s for its ephemeral server to answer is too little on a busy 2-core worker.
SLOW_MACHINE_STARTUP_TIMEOUT_S = 120
STOP_GRACE_S = 5
# What Prefect's SubprocessASGIServer sets for the server it starts: no UI, and the server's ephemeral mode.
EPHEMERAL_SERVER_ENVIRONMENT = {"PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1", "PREFECT__SERVER_FINAL": "1"}


def allow_a_slow_start() -> None:
    """Gives Prefect's ephemeral server time to start on a loaded machine, unless told otherwise. Prefect reads
    the setting when it is imported: call this first."""
    os.environ.setdefault(STARTUP_TIMEOUT_SETTING, str(SLOW_MACHINE_STARTUP_TIMEOUT_S))


def _own_session_dying_with_parent(prctl) -> None:
    """Runs in the server's process between fork and exec: nothing here may allocate or take a lock."""
    os.setsid()
    prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


class EphemeralServer:
    """Started by the main thread: the kernel's parent-death signal follows the thread that started the process."""

    def __init__(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        self.api_url = f"http://127.0.0.1:{listener.getsockname()[1]}/api"
        prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up before the fork
        self.process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "--factory", "prefect.server.api.server:create_app",
             "--fd", str(listener.fileno()), "--log-level", "error", "--lifespan", "on"],
            env={**os.environ, **EPHEMERAL_SERVER_ENVIRONMENT}, pass_fds=(listener.fileno(),),
            preexec_fn=functools.partial(_own_session_dying_with_parent, prctl),
        )
        listener.close()
        atexit.register(self.stop)

    def wait_until_up(self) -> None:
        deadline = time.monotonic() + float(os.environ.get(STARTUP_TIMEOUT_SETTING, "120"))
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the ephemeral Prefect server exited with code {self.process.returncode}")
            try:
                with urllib.request.urlopen(f"{self.api_url}/health", timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.1)
        raise RuntimeError(f"the ephemeral Prefect server did not answer within {STARTUP_TIMEOUT_SETTING}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_ephemeral_server() -> EphemeralServer | None:
    """Call it first thing, before importing Prefect; None where the environment names a server already."""
    return None if os.environ.get("PREFECT_API_URL") else EphemeralServer()


def connect(server: EphemeralServer | None) -> str:
    """Point Prefect at the server the flow runs on (a configured one, else `server`); says which."""
    from prefect.context import refresh_global_settings_context
    from prefect.settings import PREFECT_API_URL

    if PREFECT_API_URL.value():
        if server is not None:
            server.stop()
        return f"the Prefect server at {PREFECT_API_URL.value()}"
    server.wait_until_up()
    os.environ["PREFECT_API_URL"] = server.api_url
    os.environ["PREFECT_UI_URL"] = ""  # the server has no UI, and is gone when the command ends
    refresh_global_settings_context()  # Prefect read its settings at import
    return "an ephemeral Prefect server for this command (set PREFECT_API_URL to run on yours)"
