"""The OS sandbox around every process that runs TensorFlow model code: Landlock, entered before any of it runs.

A SavedModel is a program, and the op scan is only a first filter: whatever it lets past still runs here.
Landlock (Linux 5.13+) lets an unprivileged process drop file-system rights for itself and every thread or
process it starts later; TCP rules need ABI 4, scoping of signals and abstract Unix sockets ABI 6. The
`landlock` package handles file-system rules only, so the rules are made with the syscalls directly.

Landlock binds the calling thread and what it creates afterwards, never threads already running (there is no
way to sync them before ABI 8), so a child enters its sandbox first thing, while it is still single-threaded,
before its warm-up imports TensorFlow. A ruleset can only narrow, so every path the validation's model code may
need is known at that point: the request's model and baseline sources and inputs file, and the workdir, where
registry downloads and loadable copies land too.
"""

from __future__ import annotations

import ctypes
import functools
import glob
import os
import site
import sys
from dataclasses import dataclass
from pathlib import Path

from landlock import FSAccess

from modelgate.errors import ModelRejected

SYS_CREATE_RULESET, SYS_ADD_RULE, SYS_RESTRICT_SELF = 444, 445, 446  # the same on every Linux architecture
CREATE_RULESET_VERSION = 1
RULE_PATH_BENEATH = 1
NET_BIND_TCP, NET_CONNECT_TCP = 1, 2
SCOPE_ABSTRACT_UNIX_SOCKET, SCOPE_SIGNAL = 1, 2
PR_SET_NO_NEW_PRIVS = 38
PR_SET_NAME, PR_SET_CHILD_SUBREAPER = 15, 36
CLONE_NEWNET = 0x40000000
CAP_SYS_ADMIN = 21

FILE_RIGHTS = FSAccess.EXECUTE | FSAccess.WRITE_FILE | FSAccess.READ_FILE | FSAccess.TRUNCATE | FSAccess.IOCTL_DEV
READ = FSAccess.READ_FILE | FSAccess.READ_DIR
READ_EXECUTE = READ | FSAccess.EXECUTE  # tools TensorFlow may start (ptxas on a GPU); a program started inherits all this
WRITE = (READ | FSAccess.WRITE_FILE | FSAccess.TRUNCATE | FSAccess.MAKE_REG | FSAccess.MAKE_DIR | FSAccess.MAKE_SYM
         | FSAccess.REMOVE_FILE | FSAccess.REMOVE_DIR | FSAccess.REFER)
DEVICE = FSAccess.READ_FILE | FSAccess.WRITE_FILE | FSAccess.IOCTL_DEV

SYSTEM_DIRS = ("/usr", "/lib", "/lib64", "/etc/ld.so.conf.d", "/sys", "/proc/self", "/proc/driver/nvidia")
SYSTEM_FILES = ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/localtime", "/proc/cpuinfo", "/proc/meminfo",
                "/proc/stat", "/dev/urandom", "/dev/random", "/dev/zero")
DEVICE_PATTERNS = ("/dev/nvidia*",)
WRITABLE_FILES = ("/dev/null",)
CODE_ROOT = str(Path(__file__).resolve().parents[2])  # holds modelgate, and in a checkout tasks/, flows/, tests/
DENIED = "Permission denied"  # strerror(EACCES): what Landlock answers, in Python's and TensorFlow's words


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64), ("handled_access_net", ctypes.c_uint64),
                ("scoped", ctypes.c_uint64)]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


@functools.cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def prctl(option: int, argument: int | bytes) -> bool:
    """prctl(2) with its one argument: whether it took effect (not where the call is missing: not Linux)."""
    try:
        return _libc().prctl(option, argument, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _syscall(*args) -> int:
    result = _libc().syscall(*(ctypes.c_long(a) if isinstance(a, int) else a for a in args))
    if result < 0:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno))
    return result


@functools.cache
def landlock_abi() -> tuple[int, str]:
    """The kernel's Landlock ABI version, 0 where it has none, with the reason."""
    if not sys.platform.startswith("linux"):
        return 0, f"Landlock is a Linux feature; this is {sys.platform}"
    try:
        return _syscall(SYS_CREATE_RULESET, None, 0, CREATE_RULESET_VERSION), ""
    except OSError as exc:
        why = {38: "the kernel was built without Landlock", 95: "Landlock is disabled (not in the lsm= boot list)",
               1: "a seccomp filter (a container's?) forbids its syscalls"}.get(exc.errno, exc.strerror)
        return 0, f"no Landlock: {why}"


def _fs_rights(abi: int) -> int:
    rights = (1 << 13) - 1  # ABI 1: EXECUTE up to MAKE_SYM
    for needed, right in ((2, FSAccess.REFER), (3, FSAccess.TRUNCATE), (5, FSAccess.IOCTL_DEV)):
        if abi >= needed:
            rights |= right
    return rights


def _existing(paths) -> list[str]:
    return sorted({str(Path(p).resolve()) for p in paths if p and os.path.exists(p)})


@dataclass(frozen=True)
class OsSandbox:
    """What a model process may touch. Built in the parent, entered by the child (see enter)."""

    read: tuple[str, ...]
    write: tuple[str, ...]
    tmpdir: str
    abi: int = 0
    devices: tuple[str, ...] = ()
    network_namespace: bool = False
    refusal: str | None = None  # a sandbox is required and this kernel cannot give one

    def record(self) -> dict[str, str]:
        """The report environment's account of it."""
        if self.refusal:
            return {"sandbox": f"none ({self.refusal})"}
        network = ["no TCP bind or connect (Landlock)" if self.abi >= 4 else "TCP not covered by this Landlock ABI"]
        if self.network_namespace:
            network.append("a network namespace of its own, with no interface up (no UDP either)")
        return {
            "sandbox": f"landlock ABI {self.abi}, no new privileges",
            "sandbox_processes": "TensorFlow, tf2onnx and baseline model processes (ONNX Runtime's runs only the "
            "ONNX file tf2onnx wrote, and logs it to MLflow)",
            "sandbox_reads": ", ".join([*self.read, "the Python environment", "system libraries and CPU facts"]),
            "sandbox_writes": ", ".join([*self.write, "/dev/null"]),
            "sandbox_network": "; ".join(network),
            "sandbox_scoped": "signals and abstract Unix sockets stay inside" if self.abi >= 6 else "none",
        }

    def enter(self) -> None:
        """Restrict this process and all it starts from now on."""
        threads = len(os.listdir("/proc/self/task"))
        if threads != 1:
            raise RuntimeError(f"the sandbox must be entered while the process has one thread, it has {threads}")
        os.makedirs(self.tmpdir, exist_ok=True)
        # Whatever a framework writes on its own (temp files, Keras' config, CUDA's kernel cache, ONNX Runtime's
        # telemetry id in the XDG cache) goes inside, where it may; elsewhere it would fail, and some say so loudly.
        os.environ.update(TMPDIR=self.tmpdir, KERAS_HOME=os.path.join(self.tmpdir, "keras"),
                          CUDA_CACHE_PATH=os.path.join(self.tmpdir, "cuda"),
                          XDG_CACHE_HOME=os.path.join(self.tmpdir, "cache"),
                          XDG_CONFIG_HOME=os.path.join(self.tmpdir, "config"))
        fs_rights = _fs_rights(self.abi)
        attr = _RulesetAttr(fs_rights, NET_BIND_TCP | NET_CONNECT_TCP if self.abi >= 4 else 0,
                            SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL if self.abi >= 6 else 0)
        size = 8 if self.abi < 4 else 16 if self.abi < 6 else 24
        ruleset = _syscall(SYS_CREATE_RULESET, ctypes.byref(attr), size, 0)
        try:
            rules = [(p, READ) for p in self.read] + [(p, WRITE) for p in self.write]
            rules += [(p, READ_EXECUTE) for p in self.python_and_system()] + [(p, DEVICE) for p in self.devices]
            rules += [(p, FSAccess.READ_FILE | FSAccess.WRITE_FILE) for p in _existing(WRITABLE_FILES)]
            for path, rights in rules:
                self._allow(ruleset, path, rights & fs_rights)
            if self.network_namespace and _libc().unshare(ctypes.c_int(CLONE_NEWNET)) != 0:
                raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNET) failed")
            no_new_privs = [ctypes.c_ulong(v) for v in (1, 0, 0, 0)]
            if _libc().prctl(ctypes.c_int(PR_SET_NO_NEW_PRIVS), *no_new_privs) != 0:
                raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS) failed")
            _syscall(SYS_RESTRICT_SELF, ruleset, 0)
        finally:
            os.close(ruleset)

    @staticmethod
    def _allow(ruleset: int, path: str, rights: int) -> None:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
        try:
            if not os.path.isdir(path):
                rights &= FILE_RIGHTS
            _syscall(SYS_ADD_RULE, ruleset, RULE_PATH_BENEATH, ctypes.byref(_PathBeneathAttr(rights, fd)), 0)
        finally:
            os.close(fd)

    @staticmethod
    def python_and_system() -> list[str]:
        """The interpreter, its packages, modelgate's own code (a project checkout, or site-packages), and the
        system's libraries and CPU facts. Not the rest of sys.path: `python -m` puts the working directory there."""
        python = [sys.prefix, sys.base_prefix, sys.exec_prefix, *site.getsitepackages(), CODE_ROOT]
        return _existing([*python, *SYSTEM_DIRS, *SYSTEM_FILES])

    def denial(self, exc: BaseException) -> ModelRejected | None:
        """The model's own attempt to reach past the sandbox, as a verdict; None for any other failure."""
        seen = exc
        while seen is not None:
            if isinstance(seen, PermissionError) or DENIED in str(seen):
                first_line = next((line for line in str(seen).splitlines() if DENIED in line), str(seen))
                return ModelRejected("os_sandbox", (
                    f"the OS sandbox stopped the model: {first_line.strip()} (model code may write only under "
                    f"{', '.join(self.write)}, read only the model, its inputs and the Python environment, and "
                    "open no network connection)"
                ))
            seen = seen.__cause__ or seen.__context__
        return None


def for_validation(sources: list[str], workdir: str | Path, required: bool, abi: int | None = None) -> OsSandbox | None:
    """The sandbox of one validation's model processes: read the sources, write the workdir. None where this
    kernel has no Landlock and none is required (the caller warns); a refusing one where it is required."""
    found, why = (abi, "no Landlock") if abi is not None else landlock_abi()
    workdir = str(Path(workdir).resolve())
    tmpdir = os.path.join(workdir, "tmp")
    if found == 0:
        if not required:
            return None
        return OsSandbox((), (workdir,), tmpdir, refusal=(
            f"{why}; the request requires an OS sandbox (--require-sandbox), so no model code was run"))
    devices = tuple(path for pattern in DEVICE_PATTERNS for path in sorted(glob.glob(pattern)))
    return OsSandbox(tuple(_existing(sources)), (workdir,), tmpdir, abi=found, devices=devices,
                     network_namespace=_may_unshare_network())


def _may_unshare_network() -> bool:
    """CAP_SYS_ADMIN in effect (root outside a restricted container): a new network namespace can be made."""
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return False
    effective = next((line.split()[1] for line in status.splitlines() if line.startswith("CapEff:")), "0")
    return bool(int(effective, 16) >> CAP_SYS_ADMIN & 1)
