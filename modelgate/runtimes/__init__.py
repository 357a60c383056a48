"""Runtimes: each runs one artifact format on some devices, in a process pool of its own.

A runtime is one module in this package that defines `RUNTIME` (what it runs, where, with which packages),
`warm_up()` (its imports, run as its pool's child starts) and `load(artifact, device, intra_op_threads,
inter_op_threads, signature=None)` returning an active Runner, in the manner of Polygraphy's backend runners and
Model Navigator's runner registry. The registry finds the modules itself: adding a runtime is adding its file.
Nothing heavy is imported at module level: the parent reads these declarations before any model has been
inspected (a runtime's heavy code lives in private `_name` modules, never read as declarations).

The SavedModel itself is an artifact too (format "savedmodel"): TensorFlow's TF2 signature, a TF1 Session and
the Keras wrapper run it, in TensorFlow's pool. Which SavedModels each serves is its `model_formats`; those that
are `reference` hold every other runtime to their outputs, one per model format.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING

import numpy as np

from modelgate.declarations import declared_in, missing_packages
from modelgate.errors import ModelgateError

if TYPE_CHECKING:
    from modelgate.description import SignatureSpec

CPU, GPU = "cpu", "gpu"
SAVEDMODEL = "savedmodel"  # the artifact format of the runtimes that run the SavedModel itself


class DeviceUnavailable(ModelgateError):
    """The runtime cannot run on the device asked (no provider, no plugin, no GPU): said, never replaced by
    a silent fallback to another device."""


@dataclass(frozen=True)
class Signature:
    """Which signature of a SavedModel a runtime of the savedmodel format runs (a converted artifact holds only
    the one it was converted from, and its runtimes take none)."""

    tags: tuple[str, ...]
    key: str
    spec: SignatureSpec | None = None  # the Keras wrapper builds its inputs and outputs from it
    feeds: dict[str, np.ndarray] | None = None  # what it will be called with: the wrapper's unknown ranks


class Runner:
    """One artifact in one runtime, shaped as Polygraphy's runners are: constructed from where the artifact is
    and how to run it, with nothing loaded; activate() loads it (a session, a compiled model, a built wrapper:
    the costly part); infer() maps named numpy inputs to named numpy outputs, and only on an active runner;
    deactivate() lets go of what activate() loaded. A runner is a context manager too. Calling it is the short
    form of a one-off: it activates the runner if need be, then infers (the Keras wrapper's call is the user's
    model.predict, its infer the direct call a server makes)."""

    name = ""  # the runtime's, as reports and MLflow metric names carry it

    def __init__(self) -> None:
        self.is_active = False
        self.placement: list[str] = []  # where it actually runs, as the runtime reports it once active

    def activate_impl(self) -> None:
        raise NotImplementedError

    def infer_impl(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def deactivate_impl(self) -> None:
        """Drop what activate_impl loaded; the garbage collector frees it."""

    def activate(self):
        if not self.is_active:
            self.activate_impl()
            self.is_active = True
        return self

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if not self.is_active:
            raise RuntimeError(f"the {self.name} runner infers only once activated")
        return self.infer_impl(feeds)

    def deactivate(self) -> None:
        if self.is_active:
            self.deactivate_impl()
            self.placement = []
            self.is_active = False

    def __call__(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.activate().infer(feeds)

    def __enter__(self):
        return self.activate()

    def __exit__(self, *_exc) -> None:
        self.deactivate()


@dataclass(frozen=True)
class Runtime:
    name: str
    artifact_format: str  # "savedmodel", "onnx", "tflite", "openvino": what targets produce and this runs
    devices: tuple[str, ...]
    packages: tuple[str, ...]  # import names; a runtime missing one is skipped, and says which
    module: str
    # Runtimes that run only a converted file with their own kernels may run outside the OS sandbox.
    sandboxed: bool = True
    # The SavedModel formats (tf1-graph, tf2, keras2) a runtime of the savedmodel format serves.
    model_formats: tuple[str, ...] = ()
    # The runtime every other one is held to, for its model formats: its outputs are the reference outputs.
    reference: bool = False
    # Another runtime whose pool this one's jobs share (the SavedModel's runtimes share TensorFlow's loaded model).
    shares_pool_of: str | None = None

    @property
    def pool(self) -> str:
        """The shared child process this runtime's jobs run in."""
        return self.shares_pool_of or self.name

    def missing_packages(self) -> list[str]:
        return missing_packages(self.packages)

    def implementation(self):
        return importlib.import_module(self.module)

    def gpu_missing(self) -> str | None:
        """What this machine lacks for the runtime's GPU path, checked cheaply in the parent; None when ready."""
        check = getattr(self.implementation(), "gpu_missing", None)
        return check() if check else None

    def load(self, artifact: str, device: str, intra_op_threads: int, inter_op_threads: int,
             signature: Signature | None = None) -> Runner:
        """The artifact loaded, its runner active. The savedmodel format's runtimes need the signature."""
        if device not in self.devices:
            raise DeviceUnavailable(f"{self.name} runs on {', '.join(self.devices)}, not {device}")
        return self.implementation().load(artifact, device, intra_op_threads, inter_op_threads, signature)


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
    """The runtimes of the format, the reference ones first (they are what the others are measured against)."""
    found = [runtime for runtime in registry().values() if runtime.artifact_format == artifact_format]
    return sorted(found, key=lambda runtime: not runtime.reference)


def reference_runtimes() -> list[Runtime]:
    """The runtimes whose outputs are the reference, one per SavedModel format: TensorFlow's own."""
    return [runtime for runtime in registry().values() if runtime.reference]


def serving(model_format: str) -> list[Runtime]:
    """The runtimes that run a SavedModel of this format itself, its reference first."""
    return [runtime for runtime in runtimes_for(SAVEDMODEL) if model_format in runtime.model_formats]


def reference_runtime(model_format: str) -> Runtime:
    """The runtime a SavedModel of this format is held to: a TF1 Session for a TF1 graph (as TF Serving serves
    it), the TF2 signature function for the others."""
    for runtime in reference_runtimes():
        if model_format in runtime.model_formats:
            return runtime
    raise ValueError(f"no reference runtime serves SavedModels of format {model_format!r}")
