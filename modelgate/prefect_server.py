"""Prefect's ephemeral server for one command, out of reach of the terminal's Ctrl-C.

A terminal sends SIGINT to its whole foreground process group. Prefect starts its ephemeral server in the
command's group, so Ctrl-C stopped the server at once, and Prefect's engine then spent minutes retrying to
record the interrupted flow run on a server that was gone. Started here, the server has a session of its own:
the command is interrupted, records the crash on a live server, and stops the server itself as it exits
(Prefect's atexit hook); should the command be killed outright, the kernel stops the server with it.
"""

from __future__ import annotations

import ctypes
import functools
import os
import signal
import subprocess

from prefect.server.api.server import SubprocessASGIServer
from prefect.settings import PREFECT_API_URL

PR_SET_PDEATHSIG = 1


def _own_session_dying_with_parent(prctl) -> None:
    """Runs in the server's process between fork and exec: nothing here may allocate or take a lock."""
    os.setsid()
    prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


class _SessionServer(SubprocessASGIServer):
    def _run_uvicorn_command(self) -> subprocess.Popen:
        prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up before the fork
        popen = subprocess.Popen
        subprocess.Popen = functools.partial(popen, preexec_fn=functools.partial(_own_session_dying_with_parent, prctl))
        try:
            return super()._run_uvicorn_command()
        finally:
            subprocess.Popen = popen


def start_ephemeral_server() -> str:
    """Start the ephemeral server Prefect would start on first use, from this (the main) thread: the kernel's
    parent-death signal follows the thread that started the process. Prefect keeps one instance per port and
    reuses this one. Nothing to start where PREFECT_API_URL names a server. Returns which server runs the flow."""
    if PREFECT_API_URL.value():
        return f"the Prefect server at {PREFECT_API_URL.value()}"
    _SessionServer().start()
    return "an ephemeral Prefect server for this command (set PREFECT_API_URL to run on yours)"
