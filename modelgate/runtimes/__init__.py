"""Runtimes: each runs one artifact format on some devices, in a process pool of its own.

A runtime is one module in this package that defines `RUNTIME` (what it runs, where, with which packages),
`warm_up()` (its imports, run as its pool's child starts) and `load(artifact, device, intra_op_threads,
inter_op_threads)` returning a Runner, in the manner of Polygraphy's backend runners and Model Navigator's
runner registry. The registry finds the modules itself: adding a runtime is adding its file. Nothing heavy is
imported at module level: the parent reads these declarations before any model has been inspected.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from functools import cache
from typing import Protocol

import numpy as np

from modelgate.declarations import declared_in, missing_packages
from modelgate.errors import ModelgateError

CPU, GPU = "cpu", "gpu"


class DeviceUnavailable(ModelgateError):
    """The runtime cannot run on the device asked (no provider, no plugin, no GPU): said, never replaced by
    a silent fallback to another device."""


class Runner(Protocol):
    """One loaded artifact: named numpy inputs to named numpy outputs."""

    placement: list[str]  # where it actually runs, as the runtime reports it (providers, device names)

    def __call__(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...


@dataclass(frozen=True)
class Runtime:
    name: str
    artifact_format: str  # "onnx", "tflite", "openvino": what targets produce and this runs
    devices: tuple[str, ...]
    packages: tuple[str, ...]  # import names; a runtime missing one is skipped, and says which
    module: str
    # Runtimes that run only a converted file with their own kernels may run outside the OS sandbox (ONNX
    # Runtime also logs the file to MLflow, which may reach beyond the workdir).
    sandboxed: bool = True

    @property
    def pool(self) -> str:
        """The shared child process this runtime's jobs run in."""
        return self.name

    def missing_packages(self) -> list[str]:
        return missing_packages(self.packages)

    def implementation(self):
        return importlib.import_module(self.module)

    def gpu_missing(self) -> str | None:
        """What this machine lacks for the runtime's GPU path, checked cheaply in the parent; None when ready."""
        check = getattr(self.implementation(), "gpu_missing", None)
        return check() if check else None

    def load(self, artifact: str, device: str, intra_op_threads: int, inter_op_threads: int) -> Runner:
        if device not in self.devices:
            raise DeviceUnavailable(f"{self.name} runs on {', '.join(self.devices)}, not {device}")
        return self.implementation().load(artifact, device, intra_op_threads, inter_op_threads)


def is_text(value: np.ndarray) -> bool:
    return value.dtype == object or value.dtype.kind in "SU"


def decoded(value: np.ndarray, name: str) -> np.ndarray:
    """TensorFlow's strings (bytes) as the runtimes that hold strings as text take them: Python str."""
    def decode(item):
        try:
            return item.decode("utf-8") if isinstance(item, bytes) else item
        except UnicodeDecodeError as exc:
            raise ModelgateError(f"input '{name}' holds bytes that are not UTF-8 text, which this runtime's strings "
                                 f"are: {exc}") from exc

    return np.vectorize(decode, otypes=[object])(value) if is_text(value) else value


def encoded(value: np.ndarray) -> np.ndarray:
    """Text outputs as TensorFlow gives strings (bytes), so that they compare with its outputs."""
    encode = np.vectorize(lambda item: item.encode("utf-8") if isinstance(item, str) else item, otypes=[object])
    return encode(value) if is_text(value) else value


@cache
def registry() -> dict[str, Runtime]:
    return declared_in(__path__, __name__, "RUNTIME")


def runtime(name: str) -> Runtime:
    return registry()[name]


def runtimes_for(artifact_format: str) -> list[Runtime]:
    return [runtime for runtime in registry().values() if runtime.artifact_format == artifact_format]
