"""What the tests of the spare keeper look for among its children."""

import time

import psutil

from modelgate.execution.sandbox import SPARE_NAME


def warm_spares(keeper: int) -> set[int]:
    """The keeper's spares that have warmed up (a copy forked from one takes back its own name)."""
    found = set()
    for child in psutil.Process(keeper).children():
        try:
            if child.name() == SPARE_NAME:
                found.add(child.pid)
        except psutil.NoSuchProcess:
            continue
    return found


def new_spare(keeper: int, known: set[int], warm: bool = True, within_s: float = 30) -> int:
    """A spare the keeper started that is not in `known`; one that has warmed up, unless `warm` is False."""
    deadline = time.monotonic() + within_s
    while True:
        started = warm_spares(keeper) if warm else {child.pid for child in psutil.Process(keeper).children()}
        if new := started - known:
            return new.pop()
        assert time.monotonic() < deadline, "the keeper started no spare"
        time.sleep(0.1)


def is_copy_of_a_spare(pid: int, keeper: int) -> bool:
    """Whether this process was forked from one of the keeper's warm spares: the keeper is its parent, and it is not
    a spare itself."""
    process = psutil.Process(pid)
    return process.ppid() == keeper and process.name() != SPARE_NAME
