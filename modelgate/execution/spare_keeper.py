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
validation started may finish beside it (usually that validation adopts it). A spare is handed over once, before
it has run anything but its warm-up.
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

from modelgate.execution.sandbox import SPARES_VARIABLE, VALIDATION_RUNNING, SpareKey, spawn_spare

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
    os.environ[SPARES_VARIABLE] = address
    try:
        yield keeper.pid
    finally:
        os.environ.pop(SPARES_VARIABLE, None)
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
    _Keeper(server).run(multiprocessing.parent_process().sentinel)


class _Keeper:
    def __init__(self, server: socket.socket) -> None:
        self.server = server
        self.waiting: dict[SpareKey, tuple[multiprocessing.Process, Connection]] = {}
        self.leases: dict[Connection, tuple[SpareKey, multiprocessing.Process | None]] = {}
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

    def _accept(self) -> None:
        client, _ = self.server.accept()
        lease = Connection(client.detach())
        try:
            key = lease.recv()  # sent at once by modelgate.execution.sandbox
            if key == VALIDATION_RUNNING:
                lease.send(("noted",))
                self.validations.add(lease)
                return
            process, conn = self.waiting.pop(key, (None, None))
            if process is not None and not process.is_alive():  # died a moment ago, before its EOF was read
                conn.close()
                process = None
            if process is None:
                lease.send(("none",))
                self.leases[lease] = (key, None)
                return
            lease.send(("spare", process.pid))
            reduction.send_handle(lease, conn.fileno(), process.pid)
        except (EOFError, OSError) as exc:
            logger.warning("a request for a spare broke off: %s", exc)
            lease.close()
            return
        conn.close()  # the adopter's alone now
        self.leases[lease] = (key, process)
        logger.info("handed spare %s (%s) over", process.pid, key[0])

    def _warmed(self, key: SpareKey) -> None:
        process, conn = self.waiting[key]
        try:
            _, unconfinable = conn.recv()
        except EOFError:
            process.join()
            logger.warning("the spare %s (%s) ended before a validation took it (exit code %s)", process.pid, key[0],
                           process.exitcode)
        else:
            if unconfinable is None:
                return  # a spare that dies later is found gone when asked for
            logger.warning("a spare warmed up with %s cannot enter a validation's sandbox exactly (%s): pools of "
                           "that spec start their child afresh", key[0], unconfinable)
            self.unfit.add(key)
            process.kill()
            process.join()
        del self.waiting[key]
        conn.close()

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
            process, conn = self.waiting.pop(next(iter(self.waiting)))  # the one asked for longest ago
            process.kill()
            process.join()
            conn.close()
        self.waiting[key] = spawn_spare(key)
        logger.info("warming up spare %s (%s)", self.waiting[key][0].pid, key[0])
