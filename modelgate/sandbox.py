"""Run model code in a child process, bounded in time and memory.

A SavedModel is a program: it can hang, crash the interpreter or eat all memory. Prefect's task timeouts
cannot interrupt blocking code in a thread, so every stage that executes a model runs its work here, and
whatever happens to the child, the parent gets a clear ModelRunError and carries on.

Importing TensorFlow and loading a model cost seconds, so the stages of one validation share children:
one pool for the TensorFlow jobs that only read the model, one for the ONNX Runtime jobs
(`shared_processes`); a job that changes TensorFlow's global state (tf2onnx) gets a single-use child, and
one that needs its own device visibility or environment a fresh one. A job that times out or is killed takes
its shared child with it, and the next job starts a new one. A pool's child can start at once with a warm-up
(importing its frameworks, never touching the model), so that import overlaps the flow's first stages instead
of following them; one whose jobs all come later is deferred until start_deferred_processes(), and a pool whose
last job is done is released (release_shared_process): a child holding a loaded model would otherwise sit
beside the next one. The parent itself never imports TensorFlow: the static reading that needs it runs in the
TensorFlow pool's child.

Within a validation every child that runs TensorFlow model code is also confined by the OS (modelgate.os_sandbox),
entered before its warm-up; where the sandbox stops the model, the job's failure becomes the verdict `os_sandbox`.
"""

from __future__ import annotations

import contextlib
import contextvars
import importlib
import multiprocessing
import os
import signal
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import psutil

from modelgate.errors import ModelgateError, ModelRejected, ModelRunError
from modelgate.schemas import SandboxLimits

if TYPE_CHECKING:
    from modelgate.os_sandbox import OsSandbox

POLL_S = 0.05
TREE_REFRESH_S = 1.0
SHARES_PROCESS = "__modelgate_process_pool__"
READY = ("ready",)


@dataclass(frozen=True)
class Limits:
    timeout_s: float
    memory_limit_mb: int | None = None


@dataclass(frozen=True)
class IsolatedRun:
    value: Any
    wall_s: float
    peak_rss_mb: float


def shares_process(pool: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Mark a job that leaves its framework's global state as it found it, so it may run in the pool's
    shared child (see shared_processes)."""

    def mark(job: Callable[..., Any]) -> Callable[..., Any]:
        setattr(job, SHARES_PROCESS, pool)
        return job

    return mark


def _redirect_output(log_path: str | None) -> None:
    if log_path:
        # Whatever the model or TensorFlow prints goes to the stage's log, not to the user's terminal.
        sys.stdout.flush()
        sys.stderr.flush()
        fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)


def _qualified_name(function: Callable[..., Any]) -> str:
    return f"{function.__module__}:{function.__qualname__}"


def _worker_main(conn, environment: dict[str, str], warm_up: str | None, sandbox: OsSandbox | None) -> None:
    """warm_up comes by name, imported only once the sandbox is entered: NumPy, say, starts OpenBLAS's threads
    as it loads, and a thread started before the sandbox would stay outside it."""
    # Ctrl-C reaches the terminal's whole process group: the parent decides, and closes this child.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Before anything imports a framework: TensorFlow reads thread counts and device visibility once.
    os.environ.update(environment)
    unconfined = None
    if sandbox is not None:
        try:
            sandbox.enter()
        except Exception as exc:  # noqa: BLE001 - then no job runs here, and each says why
            unconfined = f"the OS sandbox could not be entered, so no model code was run: {type(exc).__name__}: {exc}"
    if warm_up is not None and unconfined is None:
        module, _, name = warm_up.partition(":")
        with contextlib.suppress(Exception):  # a framework that fails to import fails the first job, with its message
            getattr(importlib.import_module(module), name)()
    conn.send(READY)
    while True:
        try:
            request = conn.recv()
        except EOFError:
            return
        if request is None:
            # The parent waits for this exit: skip the interpreter's teardown, whose final garbage collection
            # of all TensorFlow made takes seconds. Each job's output was flushed as it ended.
            os._exit(0)
        target, args, log_path = request
        if unconfined is not None:
            conn.send(("error", unconfined, "", None))
            continue
        _redirect_output(log_path)
        try:
            reply = ("ok", target(*args))
        except BaseException as exc:  # noqa: BLE001 - everything must reach the parent as a message
            rejection = (sandbox and sandbox.denial(exc)) or exc
            if isinstance(rejection, ModelRejected):  # a verdict on the model, not a failure of the job
                reply = ("rejected", rejection.check, str(rejection))
            else:
                details = traceback.format_exc()
                print(details, file=sys.stderr, flush=True)
                # modelgate's own errors travel whole too, for a caller that raises them as they are (see run_isolated)
                own = exc if isinstance(exc, ModelgateError) else None
                reply = ("error", f"{type(exc).__name__}: {exc}", details, own)
        sys.stdout.flush()
        sys.stderr.flush()
        conn.send(reply)


class _WatchedTree:
    """A model process and its descendants, whose resident memory the parent reads every poll. Listing the
    descendants scans all of /proc, which at every poll cost the parent seconds of CPU per validation, taken
    from the model processes it waits on: the list is refreshed every TREE_REFRESH_S, the figures every poll."""

    def __init__(self, pid: int) -> None:
        self.root = psutil.Process(pid)
        self._members: list[psutil.Process] = [self.root]
        self._listed_at = -TREE_REFRESH_S

    def rss_mb(self) -> float:
        now = time.monotonic()
        if now - self._listed_at >= TREE_REFRESH_S:
            try:
                self._members = [self.root, *self.root.children(recursive=True)]
            except psutil.Error:
                return 0.0
            self._listed_at = now
        total = 0
        for member in self._members:
            try:
                total += member.memory_info().rss
            except psutil.Error:
                if member is self.root:
                    return 0.0
        return total / 2**20


def _describe_exit(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            return f"killed by signal {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"killed by signal {-exitcode}"
    return f"exited with code {exitcode}"


@contextlib.contextmanager
def _parent_main_not_rerun() -> Iterator[None]:
    """A spawned child first re-imports the parent's __main__ (the script, or the module of `python -m`),
    before it could enter its sandbox; a main that imports NumPy (a benchmark, a user's script) would start
    threads there and the sandbox would refuse. Every job lives in an importable module, so the child needs
    none of the parent's main: multiprocessing skips it when __main__ has neither a spec nor a file."""
    main = sys.modules["__main__"]
    saved = {name: getattr(main, name) for name in ("__spec__", "__file__") if hasattr(main, name)}
    main.__spec__ = None
    if "__file__" in saved:
        del main.__file__
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(main, name, value)


@dataclass(frozen=True)
class SharedProcess:
    """How to start one pool's shared child: its environment variables, and a warm-up that runs at once
    (importing frameworks; it must never load the model, which is not cleared to load when the pool opens),
    or at start_deferred_processes() for a `deferred` pool. A single-use pool is a warm spare for one job that
    leaves global state behind: closed after it. A pool that runs no TensorFlow model code may stay outside
    the OS sandbox (`sandboxed=False`)."""
    environment: dict[str, str] = field(default_factory=dict)
    warm_up: Callable[[], object] | None = None
    single_use: bool = False
    sandboxed: bool = True
    deferred: bool = False


class ModelProcess:
    """One spawned interpreter that runs jobs sent to it, watched for time and memory while it does."""

    def __init__(self, spec: SharedProcess = SharedProcess(), sandbox: OsSandbox | None = None) -> None:
        self._spec = spec
        self._sandbox = sandbox
        self._child = None
        self._conn = None
        self._watched: _WatchedTree | None = None
        self._ready = False
        self._jobs_sent = 0
        self._busy = False

    @property
    def pid(self) -> int | None:
        return self._child.pid if self._child is not None else None

    @property
    def warming_up(self) -> bool:
        return self._child is not None and not self._ready

    def with_environment(self, environment: Mapping[str, str]) -> ModelProcess:
        """A new child of this pool's kind with `environment` on top of its own; a single-use pool's spare,
        which started without it, will never serve and is closed."""
        if self._spec.single_use:
            self.close()
        return ModelProcess(replace(self._spec, environment={**self._spec.environment, **environment}), self._sandbox)

    @property
    def refusal(self) -> str | None:
        """Why no model code may run here at all (a sandbox is required and this kernel has none)."""
        return self._sandbox.refusal if self._sandbox is not None else None

    def start(self) -> None:
        context = multiprocessing.get_context("spawn")
        self._conn, child_conn = context.Pipe(duplex=True)
        self._child = context.Process(
            target=_worker_main, args=(
                child_conn, self._spec.environment,
                _qualified_name(self._spec.warm_up) if self._spec.warm_up else None, self._sandbox,
            ),
            daemon=True,
        )
        with _parent_main_not_rerun():
            self._child.start()
        child_conn.close()
        self._watched = _WatchedTree(self._child.pid)
        self._ready = False
        self._jobs_sent = 0
        self._busy = False

    def close(self) -> None:
        if self._child is None:
            return
        # A child that ran no job (still warming up, say), or whose job the parent stopped waiting for (Ctrl-C),
        # has nothing to finish: it is killed at once.
        if self._jobs_sent and not self._busy and self._child.is_alive():
            with contextlib.suppress(OSError, BrokenPipeError):
                self._conn.send(None)
            self._child.join(5)
        if self._child.is_alive():
            self._child.kill()
        self._child.join(10)
        self._conn.close()
        self._child = self._conn = self._watched = None

    def wait_ready(self, limits: Limits, label: str) -> float:
        """Wait for the child's warm-up to end; returns the peak resident memory seen meanwhile."""
        if self._ready:
            return 0.0
        reply, peak = self._await_reply(limits, label, time.monotonic())
        self._ready = reply == READY
        return peak

    def _await_reply(self, limits: Limits, label: str, started: float) -> tuple[tuple, float]:
        peak = 0.0
        try:
            while not self._conn.poll(POLL_S):
                peak = max(peak, self._watched.rss_mb())
                if not self._child.is_alive():
                    raise ModelRunError(f"{label}: model process {_describe_exit(self._child.exitcode)}")
                if time.monotonic() - started > limits.timeout_s:
                    raise ModelRunError(f"{label}: timed out after {limits.timeout_s:g} s")
                if limits.memory_limit_mb is not None and peak > limits.memory_limit_mb:
                    raise ModelRunError(
                        f"{label}: killed at {peak:.0f} MiB resident memory (limit {limits.memory_limit_mb} MiB)"
                    )
            reply = self._conn.recv()
        except (ModelRunError, EOFError) as exc:
            self._child.join(1)
            message = exc if isinstance(exc, ModelRunError) else ModelRunError(
                f"{label}: model process {_describe_exit(self._child.exitcode)}"
            )
            self.close()  # a child that broke its bounds is not trusted with the next job
            raise message from None
        return reply, max(peak, self._watched.rss_mb())

    def run(self, target: Callable[..., Any], args: tuple, limits: Limits, label: str,
            log_path: str | Path | None, raises: tuple[type[ModelgateError], ...] = ()) -> IsolatedRun:
        if self.refusal:
            raise ModelRunError(f"{label}: {self.refusal}")
        if self._child is None or not self._child.is_alive():
            self.close()
            self.start()
        started = time.monotonic()
        try:
            warm_up_peak = self.wait_ready(limits, label)
            self._conn.send((target, args, str(log_path) if log_path else None))
            self._jobs_sent += 1
            self._busy = True
            reply, peak = self._await_reply(limits, label, started)
            self._busy = False
        finally:
            if self._spec.single_use:
                self.close()
        if reply[0] == "rejected":
            raise ModelRejected(reply[1], reply[2])
        if reply[0] == "error":
            if isinstance(reply[3], raises):
                raise reply[3]
            raise ModelRunError(f"{label}: {reply[1]}")
        return IsolatedRun(value=reply[1], wall_s=time.monotonic() - started, peak_rss_mb=max(peak, warm_up_peak))


_shared: contextvars.ContextVar[Mapping[str, ModelProcess]] = contextvars.ContextVar(
    "modelgate_shared", default=MappingProxyType({})
)
_sandbox: contextvars.ContextVar[OsSandbox | None] = contextvars.ContextVar("modelgate_sandbox", default=None)


@contextlib.contextmanager
def shared_processes(pools: dict[str, SharedProcess], sandbox: OsSandbox | None = None) -> Iterator[dict[str, ModelProcess]]:
    """Within this block, jobs marked with shares_process(pool) run in that pool's one child: started at
    once when the pool has a warm-up (a deferred one at start_deferred_processes()), else on first use. Every
    child started here, shared or not, enters `sandbox` (but the children of pools with sandboxed=False)."""
    processes = {name: ModelProcess(spec, sandbox if spec.sandboxed else None) for name, spec in pools.items()}
    token, sandbox_token = _shared.set(processes), _sandbox.set(sandbox)
    try:
        _start_warm_ups(deferred=False)
        yield processes
    finally:
        _shared.reset(token)
        _sandbox.reset(sandbox_token)
        for process in processes.values():
            process.close()


def _start_warm_ups(deferred: bool) -> None:
    for process in _shared.get().values():
        spec = process._spec
        if spec.warm_up is not None and spec.deferred == deferred and process.pid is None and not process.refusal:
            process.start()


def start_deferred_processes() -> None:
    """Start the warm-ups of the deferred pools (see SharedProcess), so that they overlap what comes next."""
    _start_warm_ups(deferred=True)


def release_shared_process(pool: str) -> None:
    """Close the pool's child now that its last job is done; a later job for it would start a new one."""
    process = _shared.get().get(pool)
    if process is not None:
        process.close()


def settle_shared_processes(limits: Limits) -> None:
    """Wait until no shared child is still warming up, so that nothing of ours competes with a measurement.
    A warm-up that does not end within the limits is given up: its pool starts afresh when next used."""
    for name, process in _shared.get().items():
        if process.warming_up:
            with contextlib.suppress(ModelRunError):  # the failed child is closed already
                process.wait_ready(limits, f"warm-up of the {name} process")


def run_isolated(
    target: Callable[..., Any],
    *args: Any,
    limits: Limits,
    label: str,
    log_path: str | Path | None = None,
    share: bool = True,
    pool: str | None = None,
    raises: tuple[type[ModelgateError], ...] = (),
    environment: Mapping[str, str] | None = None,
) -> IsolatedRun:
    """Call target(*args) in a child interpreter; target must be importable by name, its value must pickle.

    A target marked with shares_process(pool), or given `pool` (a job that serves several runtimes), runs in
    that pool's shared child when one is open and `share` is left True; anything else gets a fresh child.

    The model's rejections (ModelRejected) reach the caller as such; an error of one of the classes in `raises`
    as it was raised, with its own class and message (a job doing, for the parent, work that would raise the
    same there: not a SavedModel, bad inputs); any other failure as a ModelRunError naming `label`.

    `environment` adds variables to the child's before anything imports: a pool's child has read its own
    already, so the job gets a fresh child of that pool's kind (ModelProcess.with_environment).
    """
    shared = _shared.get().get(pool or getattr(target, SHARES_PROCESS, None)) if share else None
    if shared is not None and not environment:
        return shared.run(target, args, limits, label, log_path, raises)
    if shared is not None:
        process = shared.with_environment(environment)
    else:
        process = ModelProcess(SharedProcess(environment=dict(environment or {})), sandbox=_sandbox.get())
    try:
        return process.run(target, args, limits, label, log_path, raises)
    finally:
        process.close()


# Without a limit a model that eats memory takes the whole worker down with it (the kernel's OOM killer
# picks its victim, which need not be the model); half of the machine leaves room for the rest of the tree.
DEFAULT_MEMORY_SHARE = 0.5


def default_memory_limit_mb() -> int:
    return int(psutil.virtual_memory().total * DEFAULT_MEMORY_SHARE / 2**20)


def limits_of(request) -> Limits:
    """The bounds a validation request sets on each stage that runs model code."""
    limits = request.limits
    return Limits(timeout_s=limits.timeout_s, memory_limit_mb=limits.memory_limit_mb or default_memory_limit_mb())


def reading_limits_of(request) -> Limits:
    """The bounds of a job that only reads the model (inspection_job, say): the request's are meant for its model
    code, so a time or memory limit set low for that does not stop the reading, which never gets tighter ones
    than the defaults."""
    limits = limits_of(request)
    return Limits(timeout_s=max(limits.timeout_s, SandboxLimits().timeout_s),
                  memory_limit_mb=max(limits.memory_limit_mb, default_memory_limit_mb()))
