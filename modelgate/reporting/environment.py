"""The environment every figure was measured in, recorded beside it."""

from __future__ import annotations

import functools
import os
import platform
import re
import shutil
import subprocess
from importlib import metadata

import psutil

# The reference's frameworks and the service's; the targets' and runtimes' come from their registries.
PACKAGES = ["tensorflow", "tensorflow-cpu", "keras", "tf-keras", "numpy", "mlflow", "prefect"]


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@functools.cache
def gpu_present() -> bool:
    """Whether an NVIDIA GPU is visible here; asked without importing a framework."""
    if not shutil.which("nvidia-smi"):
        return False
    try:
        listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return False
    return "GPU" in listing


def cuda_provider_available() -> bool:
    """Whether this ONNX Runtime build has the CUDA provider (it may still fall back to CPU at run time)."""
    import onnxruntime

    return "CUDAExecutionProvider" in onnxruntime.get_available_providers()


def _cuda_version() -> str:
    try:
        header = subprocess.run(["nvidia-smi"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    marker = "CUDA Version:"
    return header.split(marker, 1)[1].split()[0] if marker in header else "unknown"


def _gpus() -> str:
    if not shutil.which("nvidia-smi"):
        return "none"
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=20, check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "nvidia-smi failed"
    return out.replace("\n", "; ") or "none"


def _normalized(distribution: str) -> str:
    """A distribution's name as PyPI normalizes it (tensorflow_cpu: tensorflow-cpu)."""
    return re.sub(r"[-_.]+", "-", distribution).lower()


@functools.cache
def registered_packages() -> list[str]:
    """The installed distributions behind every registered target's and runtime's packages (import names), in
    the registries' order: onnxruntime is onnxruntime or onnxruntime-gpu, whichever is installed."""
    from modelgate.runtimes import registry as runtimes
    from modelgate.targets import registry as targets

    imported = [package for declaration in [*targets().values(), *runtimes().values()] for package in declaration.packages]
    providers = metadata.packages_distributions()
    return list(dict.fromkeys(_normalized(distribution) for package in imported
                              for distribution in providers.get(package, [])))


def gather_environment() -> dict[str, str]:
    environment = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cpu_count": str(os.cpu_count()),
        "memory_gib": f"{psutil.virtual_memory().total / 2**30:.1f}",
        "gpus": _gpus(),
    }
    if gpu_present():
        environment["cuda_driver_version"] = _cuda_version()
    for package in dict.fromkeys([*PACKAGES, *registered_packages()]):
        try:
            environment[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return environment
