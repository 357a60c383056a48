"""TensorFlow: the SavedModel's signature as TF2's loader gives it (tf.saved_model.load), the reference runtime
of TF2 and Keras SavedModels; and what TensorFlow's other runtimes (modelgate.runtimes.tf1_session,
modelgate.runtimes.keras_wrapper) share with it: the loaded model, thread settings, SparseTensor inputs.

They run inside a sandboxed child process (modelgate.execution.sandbox), TensorFlow's pool; TensorFlow itself
is imported by a runner's activate(), never by this module: the parent reads the declaration.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from modelgate.errors import SignatureFailed
from modelgate.execution.quiet import import_tensorflow
from modelgate.model.op_allowlist import import_op_libraries_from_environment
from modelgate.model.savedmodel import KERAS2, TF2, first_meaningful_line, load_saved_model
from modelgate.numerics.inputs import Feeds
from modelgate.runtimes import CPU, GPU, SAVEDMODEL, Runner, Runtime, Signature, reference_runtime

RUNTIME = Runtime(
    name="tensorflow", artifact_format=SAVEDMODEL, devices=(CPU, GPU), packages=("tensorflow",), module=__name__,
    model_formats=(TF2, KERAS2), reference=True,
)


def warm_up() -> None:
    """TensorFlow, and the request's op libraries (their ops must be registered before a model loads)."""
    import_tensorflow()
    import_op_libraries_from_environment()


def configure_tensorflow_threads(intra_op: int, inter_op: int) -> None:
    """Thread counts are fixed once TensorFlow has run an op; a process started with TF_NUM_INTRAOP_THREADS
    and TF_NUM_INTEROP_THREADS already has them, anything else must match or fail loudly."""
    from_environment = (os.environ.get("TF_NUM_INTRAOP_THREADS"), os.environ.get("TF_NUM_INTEROP_THREADS"))
    if from_environment == (str(intra_op), str(inter_op)):
        return  # TensorFlow reads these when its own setting is 0 (the getters keep returning 0)
    threading = import_tensorflow().config.threading
    current = (threading.get_intra_op_parallelism_threads(), threading.get_inter_op_parallelism_threads())
    if current == (intra_op, inter_op):
        return
    try:
        threading.set_intra_op_parallelism_threads(intra_op)
        threading.set_inter_op_parallelism_threads(inter_op)
    except RuntimeError as exc:
        raise RuntimeError(
            f"TensorFlow already runs with {current[0]} intra-op and {current[1]} inter-op threads; "
            f"{intra_op} and {inter_op} were asked"
        ) from exc


def sparse_components(dense: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A SparseTensor input travels dense (zeros are absent entries): its indices, values and dense shape,
    in the row-major order tf.sparse.from_dense gives."""
    indices = np.argwhere(dense != 0).astype(np.int64)
    return indices, dense[tuple(indices.T)], np.array(dense.shape, np.int64)


def sparse_arguments(name: str, indices, values, dense_shape) -> dict:
    """TF2's loader flattens a TF1 SparseTensor input into these three arguments of the signature function."""
    return {f"{name}_indices": indices, f"{name}_values": values, f"{name}_dense_shape": dense_shape}


def failure_reason(exc: Exception, tf) -> str:
    return first_meaningful_line(exc.message if isinstance(exc, tf.errors.OpError) else str(exc))


def signature_failed(exc: Exception, tf) -> SignatureFailed:
    return SignatureFailed(failure_reason(exc, tf))


class TFSignatureRunner(Runner):
    """The raw signature, as tf.saved_model.load exposes it: the reference every other runtime is held to
    (TF1 graph models excepted, see modelgate.runtimes.tf1_session)."""

    name = RUNTIME.name

    def __init__(self, model_dir: str | Path, tags: list[str], key: str):
        super().__init__()
        self.model_dir, self.tags, self.key = model_dir, list(tags), key

    def activate_impl(self) -> None:
        self._tf = import_tensorflow()
        self.loaded = load_saved_model(self.model_dir, self.tags)
        self.signature_fn = self.loaded.signatures[self.key]
        self._parameters = set(self.signature_fn.structured_input_signature[1])

    def deactivate_impl(self) -> None:
        self.loaded = self.signature_fn = None

    def _arguments(self, name: str, value: np.ndarray) -> dict:
        if name in self._parameters or f"{name}_indices" not in self._parameters:
            return {name: self._tf.constant(value)}
        return {key: self._tf.constant(part) for key, part in sparse_arguments(name, *sparse_components(value)).items()}

    def infer_impl(self, feeds: Feeds) -> dict[str, np.ndarray]:
        tensors = {key: tensor for name, value in feeds.items() for key, tensor in self._arguments(name, value).items()}
        try:
            outputs = self.signature_fn(**tensors)
        except self._tf.errors.OpError as exc:
            raise signature_failed(exc, self._tf) from exc
        return {name: value.numpy() for name, value in outputs.items()}


_loaded: dict[tuple, Runner] = {}


def loaded_once(runner: type, model_dir: str | Path, tags: list[str] | tuple[str, ...], key: str):
    """The runner, active, loaded once per process: jobs sharing TensorFlow's process reuse the loaded model."""
    cache_key = (runner, str(model_dir), tuple(tags), key)
    if cache_key not in _loaded or not _loaded[cache_key].is_active:
        _loaded[cache_key] = runner(model_dir, list(tags), key).activate()
    return _loaded[cache_key]


def drop_loaded_models() -> None:
    """Forget every runner loaded in this process, and Keras's global state, and collect them: a job after the
    model stages (a conversion in TensorFlow's child) then does not hold the model's weights beside its own copies."""
    import gc
    import sys

    if not _loaded:  # a fresh child: nothing to drop, and a full collection there costs a fraction of a second
        return
    for runner in _loaded.values():
        runner.deactivate()
    _loaded.clear()
    if "keras" in sys.modules:
        sys.modules["keras"].backend.clear_session()
    gc.collect()


def the_signature(runtime: Runtime, signature: Signature | None) -> Signature:
    if signature is None:
        raise ValueError(f"{runtime.name} runs a SavedModel's signature: name it (tags and key)")
    return signature


def load(artifact: str, device: str, intra_op_threads: int, inter_op_threads: int,
         signature: Signature | None = None) -> TFSignatureRunner:
    """TensorFlow's thread counts and visible devices are its process's, fixed before it runs its first op (the
    pool's environment, modelgate.execution.jobs.tensorflow_benchmark_job): the runner runs with those."""
    chosen = the_signature(RUNTIME, signature)
    return loaded_once(TFSignatureRunner, artifact, chosen.tags, chosen.key)


def load_signature_runner(model_dir: str | Path, tags: list[str], key: str) -> TFSignatureRunner:
    """The signature as TF2's loader gives it: what the Keras wrapper calls, whatever the model's format."""
    return loaded_once(TFSignatureRunner, model_dir, tags, key)


def load_reference_runner(model_dir: str | Path, tags: list[str], key: str, model_format: str, device: str = CPU):
    """The runtime every other one is held to, by the SavedModel's format, as the registry declares it."""
    return reference_runtime(model_format).load(str(model_dir), device, 0, 0, Signature(tuple(tags), key))
