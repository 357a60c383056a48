"""Warm spares for validations that run in processes of their own: `modelgate serve` and `modelgate worker`.

Prefect's runner and its process worker start a process per flow run, so a spare kept in a flow run's process dies
with it. The keeper lives as long as the server or worker that started it: a pool opening in any flow run under it
asks it for a spare of its spec (modelgate.execution.sandbox.spare_key), and gets the spare's end of the pipe (its file
descriptor, over a Unix socket) together with a lease, which the pool holds until its child is closed. The keeper
reaps the spare and tells the lease how it ended. When a lease ends, the keeper starts a new spare of that spec, once
no validation runs under it: each validation tells the keeper it runs (modelgate.execution.sandbox.shared_processes)
for as long as it does, so a spare never warms up beside a validation (its imports would take cores from the
validation's conversions and measurements: a pool's lease ends mid-validation when TensorFlow's child closes at
the targets' stages), and the next validation of that spec finds one. A spare that began warming up before a
validation started may finish beside it. A spare is handed over once, before it has run anything but its warm-up.

Where the keeper can reap what its spares fork (Linux: a child subreaper, with pidfds), a warm single-threaded spare
is never handed over: the keeper has it fork a copy for each pool that asks (modelgate.execution.sandbox), hands the
copy over instead, and keeps the spare, so that each later validation of that spec pays a fork, not a warm-up. A
spare that will be copied once warm is not handed over while it warms up (its pool starts a child of its own).
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import sys
import tempfile
from collections.abc import Callable, Iterator
from functools import partial
from multiprocessing import reduction
from multiprocessing.connection import Connection, wait

import psutil

from modelgate.execution.os_sandbox import PR_SET_CHILD_SUBREAPER, prctl
from modelgate.execution.sandbox import (
    FORK,
    FORKED,
    SPARES_VARIABLE,
    VALIDATION_RUNNING,
    SpareKey,
    spawn_spare,
)

# Each spare holds its frameworks in memory (TensorFlow's child, about 0.5 GiB): a few specs, the latest asked.
MAX_SPARES = 4
STOP_S = 10

logger = logging.getLogger("modelgate.spare_keeper")


@contextlib.contextmanager
def keep_spares() -> Iterator[int]:
    """A spare keeper for the processes this one starts from now on (they find it by SPARES_VARIABLE); its pid."""
    folder = tempfile.mkdtemp(prefix="modelgate-spares-")  # only this user may reach the socket inside
    address = os.path.join(folder, "keeper.sock")
    context = multiprocessing.get_context("spawn")
    listening, listens = context.Pipe(duplex=False)
    keeper = context.Process(target=_keeper_main, args=(address, listens), name="modelgate-spare-keeper")
    keeper.start()
    listens.close()
    if not listening.poll(STOP_S):  # the processes started meanwhile would find no one at the address
        logger.warning("the spare keeper did not start within %s s: pools start their children afresh", STOP_S)
    listening.close()
    outer = os.environ.get(SPARES_VARIABLE)
    os.environ[SPARES_VARIABLE] = address
    try:
        yield keeper.pid
    finally:
        if outer is None:
            os.environ.pop(SPARES_VARIABLE, None)
        else:
            os.environ[SPARES_VARIABLE] = outer
        keeper.terminate()
        keeper.join(STOP_S)
        shutil.rmtree(folder, ignore_errors=True)


def _keeper_main(address: str, listens: Connection) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group: the parent stops it
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # so that multiprocessing ends the spares at exit
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(address)
    server.listen()
    listens.send(address)
    listens.close()
    keeper = _Keeper(server, forks=_become_subreaper())
    try:
        keeper.run(multiprocessing.parent_process().sentinel)
    finally:
        keeper.stop_copies()  # multiprocessing ends the spares at exit; the copies are none of its children


def _become_subreaper() -> bool:
    """Whether this process now reaps the copies forked from its spares: each becomes its child once the fork that
    made it exits, so that its exit code reaches the pool that adopted it. Where it cannot (not Linux, no pidfd),
    each spare goes to a pool itself, and the next warms up afresh."""
    return hasattr(os, "pidfd_open") and prctl(PR_SET_CHILD_SUBREAPER, 1)


class _Copy:
    """A copy forked from a warm spare, which the keeper reaps (see _become_subreaper): what the keeper uses of a
    multiprocessing.Process."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.exitcode: int | None = None
        self.sentinel = os.pidfd_open(pid)  # readable once it has exited; never another process that took its pid

    def is_alive(self) -> bool:
        self._reap(os.WNOHANG)
        return self.exitcode is None

    def join(self, timeout: float | None = None) -> None:
        if self.exitcode is None and wait([self.sentinel], timeout):
            self._reap(0)

    def kill(self) -> None:
        if self.exitcode is None:
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(self.sentinel, signal.SIGKILL)

    def _reap(self, options: int) -> None:
        if self.exitcode is not None:
            return
        try:
            pid, status = os.waitpid(self.pid, options)
        except ChildProcessError:  # not this keeper's child after all: its exit code is lost
            pid, status = self.pid, 255 << 8
        if pid:
            self.exitcode = os.waitstatus_to_exitcode(status)
            os.close(self.sentinel)


class _Keeper:
    def __init__(self, server: socket.socket, forks: bool) -> None:
        self.server = server
        self.forks = forks
        # One spare per spec: handed over itself, or, once warm, forking a copy for each pool that asks.
        self.waiting: dict[SpareKey, tuple[multiprocessing.Process, Connection]] = {}
        self.warming: set[SpareKey] = set()
        self.forkable: set[SpareKey] = set()  # warm, single-threaded, and so copied, never handed over itself
        self.unforkable: set[SpareKey] = set()  # warmed up with threads: its spares go themselves, warm or not
        self.leases: dict[Connection, tuple[SpareKey, multiprocessing.Process | _Copy | None]] = {}
        self.unfit: set[SpareKey] = set()
        self.validations: set[Connection] = set()  # one per validation running under the keeper
        self.wanted: dict[SpareKey, None] = {}  # spares to warm up once no validation runs, oldest first

    def run(self, parent_sentinel: int) -> None:
        while True:
            handlers: dict[object, Callable[[], None]] = {self.server: self._accept}
            for key, (_, conn) in self.waiting.items():
                handlers[conn] = partial(self._warmed, key)
            for lease, (_, spare) in self.leases.items():
                handlers[lease] = partial(self._lease_ended, lease)
                if spare is not None:
                    handlers[spare.sentinel] = partial(self._spare_ended, lease)
            for running in self.validations:
                handlers[running] = partial(self._validation_ended, running)
            ready = wait([*handlers, parent_sentinel])
            if parent_sentinel in ready:
                return  # the server or worker is gone: its spares go too, as daemonic children
            handlers[ready[0]]()  # one event at a time: each may change what the others refer to
            self._reap_orphans()

    def _reap_orphans(self) -> None:
        """A subreaper also becomes the parent of whatever a copy started and left behind when it ended."""
        if not self.forks:
            return
        known = {process.pid for process, _ in self.waiting.values()}
        known |= {spare.pid for _, spare in self.leases.values() if spare is not None}
        for child in psutil.Process().children():
            if child.pid not in known:
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(child.pid, os.WNOHANG)

    def stop_copies(self) -> None:
        for _, spare in self.leases.values():
            if isinstance(spare, _Copy):
                spare.kill()
                spare.join(STOP_S)

    def _accept(self) -> None:
        client, _ = self.server.accept()
        lease = Connection(client.detach())
        process = conn = None
        try:
            key = lease.recv()  # sent at once by modelgate.execution.sandbox
            if key == VALIDATION_RUNNING:
                lease.send(("noted",))
                self.validations.add(lease)
                return
            process, conn = self._spare_for(key)
            if process is None:
                lease.send(("none",))
                self.leases[lease] = (key, None)
                return
            lease.send(("spare", process.pid))
            reduction.send_handle(lease, conn.fileno(), process.pid)
        except (EOFError, OSError) as exc:
            logger.warning("a request for a spare broke off: %s", exc)
            lease.close()
            if process is not None:  # no longer waiting, and never to be handed over again
                process.kill()
                process.join()
                conn.close()
            return
        conn.close()  # the adopter's alone now
        self.leases[lease] = (key, process)
        logger.info("handed spare %s (%s) over", process.pid, key[0])

    def _spare_for(self, key: SpareKey) -> tuple[multiprocessing.Process | _Copy | None, Connection | None]:
        """What a pool of this spec gets: a copy of the warm spare, or the spare itself where it cannot be copied
        (then the next one warms up once the lease ends), or nothing. A spare still warming up that will be copied
        once warm is not handed over: the pool starts its own child, and every later one gets a copy at once."""
        process, conn = self.waiting.get(key, (None, None))
        if process is not None and not process.is_alive():  # died a moment ago, before its EOF was read
            self._forget(key)
            return None, None
        _, _, confinable = key  # only a confinable spare is ever copied (modelgate.execution.sandbox._unforkable)
        if process is None or (key in self.warming and self.forks and confinable and key not in self.unforkable):
            return None, None
        if key in self.forkable:
            copy = self._copy(key)
            if copy is not None:
                self.waiting[key] = self.waiting.pop(key)  # asked for last, so evicted last
                return copy
            if key not in self.waiting:
                return None, None
        self._forget(key, close=False)
        return process, conn

    def _copy(self, key: SpareKey) -> tuple[_Copy, Connection] | None:
        """A copy forked from this spec's warm spare, with its pipe; or None. A spare that says it can no longer be
        copied is left waiting, to go itself; one that did not answer in time, or died, is killed, since a late
        answer would reach whichever pool it went to."""
        process, conn = self.waiting[key]
        copy = None
        try:
            conn.send(FORK)
            if not conn.poll(STOP_S):
                raise TimeoutError(f"no answer within {STOP_S} s")
            reply = conn.recv()
            if reply[0] != FORKED:
                logger.warning("spare %s (%s) can no longer be copied (%s): it goes itself", process.pid, key[0],
                               reply[1])
                self.unforkable.add(key)
                self.forkable.discard(key)
                return None
            copy = Connection(reduction.recv_handle(conn))
            if not copy.poll(STOP_S):
                raise TimeoutError(f"the copy did not start within {STOP_S} s")
            return _Copy(copy.recv()), copy
        except (EOFError, OSError) as exc:
            logger.warning("spare %s (%s) made no copy (%s): it goes, and another warms up later", process.pid,
                           key[0], exc)
            if copy is not None:
                copy.close()  # a copy that starts late finds no one and ends
            process.kill()
            process.join()
            self._forget(key)
            return None

    def _forget(self, key: SpareKey, close: bool = True) -> None:
        _, conn = self.waiting.pop(key)
        self.warming.discard(key)
        self.forkable.discard(key)
        if close:
            conn.close()

    def _warmed(self, key: SpareKey) -> None:
        process, conn = self.waiting[key]
        try:
            _, unconfinable, unforkable = conn.recv()
        except EOFError:
            process.join()
            logger.warning("the spare %s (%s) ended before a validation took it (exit code %s)", process.pid, key[0],
                           process.exitcode)
        else:
            self.warming.discard(key)
            if unconfinable is None:
                if unforkable is None and self.forks:
                    self.forkable.add(key)
                elif unforkable is not None:
                    self.unforkable.add(key)
                return  # a spare that dies later is found gone when asked for
            logger.warning("a spare warmed up with %s cannot enter a validation's sandbox exactly (%s): pools of "
                           "that spec start their child afresh", key[0], unconfinable)
            self.unfit.add(key)
            process.kill()
            process.join()
        self._forget(key)

    def _spare_ended(self, lease: Connection) -> None:
        key, spare = self.leases[lease]
        spare.join()
        with contextlib.suppress(OSError):
            lease.send(("exit", spare.exitcode))
        self.leases[lease] = (key, None)

    def _lease_ended(self, lease: Connection) -> None:
        """The adopter closed its pool's child (or is gone): the spare goes, and a new one of its spec warms up."""
        key, spare = self.leases.pop(lease)
        lease.close()
        if spare is not None:
            spare.kill()
            spare.join()
        if key in self.unfit or key in self.waiting:
            return
        if self.validations:
            self.wanted.pop(key, None)
            self.wanted[key] = None  # the latest asked last
            logger.info("a spare (%s) will warm up once no validation runs", key[0])
            return
        self._warm_up(key)

    def _validation_ended(self, running: Connection) -> None:
        """A validation ended (its process closed the connection, or is gone): with none left, the spares its
        pools' leases asked for warm up."""
        self.validations.discard(running)
        running.close()
        if self.validations:
            return
        wanted, self.wanted = list(self.wanted), {}
        for key in wanted[-MAX_SPARES:]:
            if key not in self.unfit and key not in self.waiting:
                self._warm_up(key)

    def _warm_up(self, key: SpareKey) -> None:
        while len(self.waiting) >= MAX_SPARES:
            oldest = next(iter(self.waiting))  # the one asked for longest ago
            process, _ = self.waiting[oldest]
            process.kill()
            process.join()
            self._forget(oldest)
        self.waiting[key] = spawn_spare(key)
        self.warming.add(key)
        logger.info("warming up spare %s (%s)", self.waiting[key][0].pid, key[0])
