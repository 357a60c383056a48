"""Run model code in a child process, bounded in time and memory.

A SavedModel is a program: it can hang, crash the interpreter or eat all memory. Prefect's task timeouts
cannot interrupt blocking code in a thread, so every stage that executes a model runs its work here, and
whatever happens to the child, the parent gets a clear ModelRunError and carries on.

Importing TensorFlow and loading a model cost seconds, so the stages of one validation share children:
one pool for the TensorFlow jobs that only read the model, one for the ONNX Runtime jobs
(`shared_processes`); a job that changes TensorFlow's global state (tf2onnx) runs last in its child (a
single-use one, or TensorFlow's pool's child as it is released), and one that needs its own device visibility
or environment a fresh one. A job that times out or is killed takes
its shared child with it, and the next job starts a new one. A pool's child can start at once with a warm-up
(importing its frameworks, never touching the model), so that import overlaps the flow's first stages instead
of following them; one whose jobs all come later is deferred until start_deferred_processes(), and a pool whose
last job is done is released (release_shared_process): a child holding a loaded model would otherwise sit
beside the next one. The parent itself never imports TensorFlow: the static reading that needs it runs in the
TensorFlow pool's child.

Within a validation every child that runs TensorFlow model code is also confined by the OS (modelgate.execution.os_sandbox),
entered before its warm-up; where the sandbox stops the model, the job's failure becomes the verdict `os_sandbox`.

A pool's child may also be a spare from the spare keeper (modelgate.execution.spare_keeper): warmed up before its validation was
known, and so before that validation's sandbox, while importing in a way that leaves it single-threaded; it enters
the sandbox when a pool adopts it, and only if it still has one thread. A warm spare with one thread goes to no pool
itself: it forks a copy of itself for each (in a fraction of a second, where its warm-up took seconds), and the copy
is what the pool adopts. A spare or copy serves one pool, never a second, and none has run model code before.
"""

from __future__ import annotations

import contextlib
import contextvars
import importlib
import logging
import multiprocessing
import os
import signal
import socket
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from multiprocessing import reduction
from multiprocessing.connection import Connection
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import psutil

from modelgate.errors import ModelgateError, ModelRejected, ModelRunError
from modelgate.request import SandboxLimits

if TYPE_CHECKING:
    from modelgate.execution.os_sandbox import OsSandbox

POLL_S = 0.05
TREE_REFRESH_S = 1.0
SHARES_PROCESS = "__modelgate_process_pool__"
READY = ("ready",)
WARM, UNFIT = "warm", "unfit"  # a spare's word after its warm-up, and at a hand-over it cannot take
# The keeper's request to a warm spare for a copy of itself, and the spare's answers.
FORK, FORKED, UNFORKABLE = "fork", "forked", "unforkable"
SPARE_NAME = "modelgate-spare"  # a warm spare's process name, as ps shows it; a copy takes back the one it had
# What a spare's warm-up would otherwise start before the sandbox could bind it, each found on this stack (the
# docs/benchmarks.md lists the threads): OpenBLAS starts a thread per core as NumPy loads, Arrow's jemalloc
# its purging thread (Keras imports pandas, which imports pyarrow), ONNX Runtime its telemetry thread at import.
SINGLE_THREADED_IMPORT = {"OPENBLAS_NUM_THREADS": "1", "JE_ARROW_MALLOC_CONF": "background_thread:false",
                          "ORT_DISABLE_TELEMETRY": "1"}
SPARES_VARIABLE = "MODELGATE_SPARES"  # the address of the spare keeper serving this process's tree, if any
# What a validation sends the spare keeper for as long as it runs: no spare warms up meanwhile.
VALIDATION_RUNNING = "validation-running"

logger = logging.getLogger("modelgate.sandbox")


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


def _warm_up(warm_up: str | None) -> None:
    if warm_up is not None:
        module, _, name = warm_up.partition(":")
        with contextlib.suppress(Exception):  # a framework that fails to import fails the first job, with its message
            getattr(importlib.import_module(module), name)()


def _enter(sandbox: OsSandbox | None) -> str | None:
    """Confine this process; why no job may run here where that failed."""
    if sandbox is None:
        return None
    try:
        sandbox.enter()
    except Exception as exc:  # noqa: BLE001 - then no job runs here, and each says why
        return f"the OS sandbox could not be entered, so no model code was run: {type(exc).__name__}: {exc}"
    return None


def _worker_main(conn, environment: dict[str, str], warm_up: str | None, sandbox: OsSandbox | None) -> None:
    """warm_up comes by name, imported only once the sandbox is entered: NumPy, say, starts OpenBLAS's threads
    as it loads, and a thread started before the sandbox would stay outside it."""
    # Ctrl-C reaches the terminal's whole process group: the parent decides, and closes this child.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Before anything imports a framework: TensorFlow reads thread counts and device visibility once.
    os.environ.update(environment)
    unconfined = _enter(sandbox)
    if unconfined is None:
        _warm_up(warm_up)
    conn.send(READY)
    _serve_jobs(conn, sandbox, unconfined)


def _unconfinable() -> str | None:
    """Why a sandbox entered now would not bind everything this process runs: Landlock binds only the calling thread
    and those it starts later, and TensorFlow reads its thread counts once, as it makes its context."""
    threads = sorted(os.listdir("/proc/self/task"), key=int)
    if len(threads) > 1:
        names = []
        for tid in threads:
            with contextlib.suppress(OSError):
                names.append(f"{tid} {Path(f'/proc/self/task/{tid}/comm').read_text().strip()}")
        return f"it has {len(threads)} threads ({', '.join(names)})"
    tf_context = sys.modules.get("tensorflow.python.eager.context")
    made = tf_context.context_safe() if tf_context is not None else None
    if made is not None and getattr(made, "_initialized", False):
        return "TensorFlow made its context during the warm-up"
    return None


def _blas_threads() -> int:
    """The threads OpenBLAS would have started with in this environment: its own order of variables, capped at the
    CPUs this process may use."""
    cpus = len(os.sched_getaffinity(0))
    for variable in ("OPENBLAS_NUM_THREADS", "GOTO_NUM_THREADS", "OMP_NUM_THREADS"):
        with contextlib.suppress(ValueError):
            if (count := int(os.environ.get(variable, ""))) > 0:
                return min(count, cpus)
    return cpus


def _spare_main(conn, environment: dict[str, str], warm_up: str, confinable: bool) -> None:
    """A spare: warms up at once, then forks a copy of itself for each pool the keeper hands one to (a fraction of a
    second, where a warm-up takes seconds), or goes itself to a pool that takes it, whose sandbox and environment
    it takes. A confinable one imports single-threaded (SINGLE_THREADED_IMPORT) and is refused where it is not at
    hand-over."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.environ.update(environment)
    if confinable:
        os.environ.update(SINGLE_THREADED_IMPORT)
        # Keras reads its config once, at import, from KERAS_HOME: a child confined first finds an empty one in its
        # workdir, and so takes the defaults. A folder that cannot exist gives the same whatever ~/.keras holds, and
        # leaves nothing behind a spare killed while it warms up.
        os.environ["KERAS_HOME"] = os.path.join(os.devnull, "keras")
    _warm_up(warm_up)
    name = _process_name()
    _set_process_name(SPARE_NAME)
    conn.send((WARM, _unconfinable() if confinable else None, _unforkable(confinable)))
    while True:
        try:
            request = conn.recv()
        except EOFError:
            return
        if request != FORK:
            _set_process_name(name)
            _adopted(conn, confinable, request)
            return
        copy = _fork_a_copy(conn, confinable, name)
        if copy is not None:
            _copy_main(copy, confinable)


def _fork_a_copy(conn, confinable: bool, name: str) -> Connection | None:
    """Fork this warm spare for the keeper; in the copy, its pipe to the adopter, None here. The fork's own child
    forks the copy and exits at once, so that the copy becomes the keeper's child (a subreaper), which reaps it and
    passes its exit code on. The copy's end of a new pipe reaches the keeper over `conn`, and its pid over that. The
    copy has the spare's first name (`name`) before the keeper can see it, so that it is never taken for a spare."""
    if why := _unforkable(confinable):
        conn.send((UNFORKABLE, why))
        return None
    ours, theirs = multiprocessing.Pipe(duplex=True)
    sys.stdout.flush()  # or every copy would write what is buffered again
    sys.stderr.flush()
    intermediate = os.fork()
    if intermediate == 0:
        try:
            _set_process_name(name)
            copy = os.fork()
        except BaseException:  # noqa: BLE001 - the keeper reads no pid on the pipe: no copy
            os._exit(1)
        if copy:
            os._exit(0)
        conn.close()
        ours.close()
        return theirs
    _, status = os.waitpid(intermediate, 0)
    theirs.close()
    if os.waitstatus_to_exitcode(status) != 0:
        ours.close()
        conn.send((UNFORKABLE, "its fork failed"))
        return None
    conn.send((FORKED,))
    reduction.send_handle(conn, ours.fileno(), 0)
    ours.close()
    return None


def _copy_main(conn: Connection, confinable: bool) -> None:
    """A copy of a warm spare: tells the keeper its pid, then goes to its adopter. It never returns into the loop of
    the spare it was forked from, nor unwinds that process's stack."""
    code = 0
    try:
        conn.send(os.getpid())
        _adopted(conn, confinable, conn.recv())
    except EOFError:
        pass
    except BaseException:  # noqa: BLE001 - reported by its exit code and on stderr
        traceback.print_exc()
        code = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _adopted(conn, confinable: bool, hand_over) -> None:
    if hand_over is None:
        return
    sandbox, adopter_environment, adopter_folder = hand_over
    if sandbox is not None and (why := _unconfinable()):
        conn.send((UNFIT, why))
        return
    # What a child started by the adopter would have found (relative paths in a request are the adopter's); the
    # sandbox then adds its folders.
    os.chdir(adopter_folder)
    os.environ.clear()
    os.environ.update(adopter_environment)
    tempfile.tempdir = None  # Python keeps the temporary folder it found first; the sandbox's is another
    unconfined = _enter(sandbox)
    if unconfined is None and confinable:
        import threadpoolctl

        threadpoolctl.threadpool_limits(_blas_threads(), user_api="blas")
    conn.send(READY)
    _serve_jobs(conn, sandbox, unconfined)


def _unforkable(confinable: bool) -> str | None:
    """Why a copy forked from this process would not be what it is: fork copies only the calling thread. Nor is
    one outside the sandbox copied: its warm-up may have opened connections (the logging child's tracking store)
    that copies must not share."""
    if not confinable:
        return "it runs outside the OS sandbox"
    threads = len(os.listdir("/proc/self/task"))
    return f"it has {threads} threads" if threads > 1 else None


def _process_name() -> str:
    with contextlib.suppress(OSError):
        return Path("/proc/self/comm").read_text().strip()
    return "python"


def _set_process_name(name: str) -> None:
    """What ps and psutil show for this process (Linux's 15 bytes), so that a warm spare can be told from a copy."""
    from modelgate.execution.os_sandbox import PR_SET_NAME, prctl  # the spare imports it to enter the sandbox

    prctl(PR_SET_NAME, name.encode()[:15])


def _serve_jobs(conn, sandbox: OsSandbox | None, unconfined: str | None) -> None:
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
    or at start_deferred_processes() for a `deferred` pool. A single-use pool's child serves one job that
    leaves global state behind: closed after it. A pool whose child `serves_one_more_job` when released
    (release_shared_process) becomes single-use then instead of closing: its last job may leave global state
    behind. A pool that runs no TensorFlow model code may stay outside the OS sandbox (`sandboxed=False`). An
    `on_demand` pool's warm-up starts only when start_shared_process() asks for it."""
    environment: dict[str, str] = field(default_factory=dict)
    warm_up: Callable[[], object] | None = None
    single_use: bool = False
    sandboxed: bool = True
    deferred: bool = False
    serves_one_more_job: bool = False
    on_demand: bool = False


SpareKey = tuple[str, tuple[tuple[str, str], ...], bool]


def spare_key(spec: SharedProcess) -> SpareKey | None:
    """What a spare must share with a pool to stand in for its child: all it read and ran before the pool adopted
    it. None for a pool without a warm-up: a spare of it would save nothing."""
    if spec.warm_up is None:
        return None
    return _qualified_name(spec.warm_up), tuple(sorted(spec.environment.items())), spec.sandboxed


def _spawn(target: Callable[..., None], args: tuple) -> tuple[multiprocessing.Process, Connection]:
    context = multiprocessing.get_context("spawn")
    conn, child_conn = context.Pipe(duplex=True)
    child = context.Process(target=target, args=(child_conn, *args), daemon=True)
    with _parent_main_not_rerun():
        child.start()
    child_conn.close()
    return child, conn


def spawn_spare(key: SpareKey) -> tuple[multiprocessing.Process, Connection]:
    warm_up, environment, confinable = key
    return _spawn(_spare_main, (dict(environment), warm_up, confinable))


class _KeptChild:
    """A spare the spare keeper started, in the process that adopted it: the keeper reaps it, and says how it ended
    on the lease."""

    def __init__(self, pid: int, lease: Connection) -> None:
        self.pid = pid
        self.exitcode: int | None = None
        self._lease = lease
        self._ended = False
        self._process = psutil.Process(pid)

    def _ended_within(self, timeout: float | None) -> bool:
        if not self._ended and self._lease.poll(timeout):
            try:
                self.exitcode = self._lease.recv()[1]
                self._ended = True
            except (EOFError, OSError):  # the keeper is gone; what it handed over may not be, until killed here
                self._ended = not self._running()
        return self._ended

    def _running(self) -> bool:
        try:
            return self._process.is_running() and self._process.status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            return False

    def is_alive(self) -> bool:
        return not self._ended_within(0)

    def join(self, timeout: float | None = None) -> None:
        self._ended_within(timeout)

    def kill(self) -> None:
        with contextlib.suppress(psutil.Error):  # psutil checks it is still the process it found
            self._process.kill()


def _take_spare(key: SpareKey) -> tuple[_KeptChild | None, Connection | None, Connection | None]:
    """The spare keeper's spare for this key, with its connection and the lease on it (the keeper forgets it: it is
    never handed over again); or no spare, with the lease that says this key was wanted (the keeper starts a spare of
    it once the lease ends); nothing without a keeper."""
    address = os.environ.get(SPARES_VARIABLE)
    if not address:
        return None, None, None
    lease = None
    try:
        lease = _keeper_connection(address)
        lease.send(key)
        reply = lease.recv()
        if reply[0] != "spare":
            return None, None, lease
        return _KeptChild(reply[1], lease), Connection(reduction.recv_handle(lease)), lease
    except (OSError, EOFError, psutil.Error) as exc:  # a keeper gone: the pool's child starts as it would without
        if lease is not None:
            lease.close()
        logger.warning("the spare keeper at %s did not answer (%s): starting a fresh child", address, exc)
        return None, None, None


def _keeper_connection(address: str) -> Connection:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.connect(address)
        return Connection(client.detach())


def _tell_keeper_a_validation_runs() -> Connection | None:
    """A connection that tells the spare keeper serving this process's tree (if any) that a validation runs here,
    until it is closed or this process is gone: the keeper warms up no spare meanwhile (one would compete with
    the validation's stages for the cores and skew its measurements). None without a keeper."""
    address = os.environ.get(SPARES_VARIABLE)
    if not address:
        return None
    running = None
    try:
        running = _keeper_connection(address)
        running.send(VALIDATION_RUNNING)
        running.recv()  # the keeper knows before the first pool asks it for a spare
        return running
    except (OSError, EOFError) as exc:
        if running is not None:
            running.close()
        logger.warning("the spare keeper at %s did not answer (%s)", address, exc)
        return None


class ModelProcess:
    """One spawned interpreter that runs jobs sent to it, watched for time and memory while it does."""

    def __init__(self, spec: SharedProcess = SharedProcess(), sandbox: OsSandbox | None = None) -> None:
        self._spec = spec
        self._sandbox = sandbox
        self._child = None
        self._conn = None
        self._lease: Connection | None = None
        self._watched: _WatchedTree | None = None
        self._ready = False
        self._jobs_sent = 0
        self._busy = False
        self._released = False

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
    def serves_jobs(self) -> bool:
        """False once released and closed: a later job of its pool gets a child of its own (run_isolated)."""
        return not self._released or self._child is not None

    def release(self) -> None:
        """Its pool's jobs are done: closed now, or, where its spec says it `serves_one_more_job`, after that job."""
        self._released = True
        if self._spec.serves_one_more_job and self._child is not None:
            self._spec = replace(self._spec, single_use=True)
        else:
            self.close()

    @property
    def refusal(self) -> str | None:
        """Why no model code may run here at all (a sandbox is required and this kernel has none)."""
        return self._sandbox.refusal if self._sandbox is not None else None

    def start(self) -> None:
        self._ready = False
        self._jobs_sent = 0
        self._busy = False
        key = spare_key(self._spec)
        self._child, self._conn, self._lease = _take_spare(key) if key is not None else (None, None, None)
        if self._child is not None:
            try:
                # What a child started here would have found: this process's environment and the pool's, and folder.
                self._conn.send((self._sandbox, {**os.environ, **self._spec.environment}, os.getcwd()))
                self._watched = _WatchedTree(self._child.pid)
                logger.info("adopted spare process %s (warmed up with %s)", self._child.pid, key[0])
                return
            except (OSError, psutil.Error) as exc:
                logger.warning("spare process %s is gone (%s): starting a fresh child", self._child.pid, exc)
                self._conn.close()
        self._start_fresh()

    def _start_fresh(self) -> None:
        warm_up = _qualified_name(self._spec.warm_up) if self._spec.warm_up else None
        self._child, self._conn = _spawn(_worker_main, (self._spec.environment, warm_up, self._sandbox))
        self._watched = _WatchedTree(self._child.pid)

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
        if self._lease is not None:
            self._lease.close()
        self._child = self._conn = self._watched = self._lease = None

    def wait_ready(self, limits: Limits, label: str) -> float:
        """Wait for the child's warm-up to end; returns the peak resident memory seen meanwhile."""
        if self._ready:
            return 0.0
        started, peak = time.monotonic(), 0.0
        while True:
            reply, seen = self._await_reply(limits, label, started)
            peak = max(peak, seen)
            if reply[0] == WARM:  # an adopted spare, still warming up when adopted: its answer to the hand-over follows
                continue
            if reply[0] != UNFIT:
                break
            logger.warning("spare process %s cannot enter the sandbox exactly (%s): closed, and a fresh child "
                           "started instead", self._child.pid, reply[1])
            self.close()
            self._start_fresh()
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
            # A child whose job the parent stopped waiting for (Ctrl-C) is still running it: a next job would
            # queue behind it, up to its time limit.
            if self._spec.single_use or self._busy:
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
    running = _tell_keeper_a_validation_runs()
    try:
        _start_warm_ups(deferred=False)
        yield processes
    finally:
        _shared.reset(token)
        _sandbox.reset(sandbox_token)
        for process in processes.values():
            process.close()
        if running is not None:
            running.close()  # the last to close: the spares its pools' leases asked for may now warm up


def _start_warm_ups(deferred: bool) -> None:
    for process in _shared.get().values():
        spec = process._spec
        if (spec.warm_up is not None and spec.deferred == deferred and not spec.on_demand and process.pid is None
                and not process.refusal):
            process.start()


def start_deferred_processes() -> None:
    """Start the warm-ups of the deferred pools (see SharedProcess), so that they overlap what comes next."""
    _start_warm_ups(deferred=True)


def shared_process(pool: str) -> ModelProcess | None:
    """The pool's process within shared_processes(), if such a pool is open."""
    return _shared.get().get(pool)


def start_shared_process(pool: str) -> None:
    """Start the warm-up of the pool's child now (an `on_demand` pool's), so that it overlaps what comes next."""
    process = shared_process(pool)
    if process is not None and process.pid is None and process._spec.warm_up is not None and not process.refusal:
        process.start()


def release_shared_process(pool: str) -> None:
    """Close the pool's child now that its jobs are done (or after one more, see SharedProcess.serves_one_more_job);
    a later job for it gets a fresh child of the pool's kind, closed after it."""
    process = _shared.get().get(pool)
    if process is not None:
        process.release()


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
    if shared is not None and not environment and shared.serves_jobs:
        return shared.run(target, args, limits, label, log_path, raises)
    if shared is not None:
        process = shared.with_environment(environment or {})
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
