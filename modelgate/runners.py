"""Runners: load a model once, then map named numpy inputs to named numpy outputs.

They run inside a sandboxed child process (modelgate.sandbox); nothing here is imported by the parent
before a model has passed static inspection.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from modelgate.inputs import Feeds
from modelgate.quiet import import_tensorflow
from modelgate.errors import ModelRunError
from modelgate.savedmodel import first_meaningful_line, load_saved_model
from modelgate.schemas import SignatureSpec


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


class TFSignatureRunner:
    """The raw signature, as tf.saved_model.load exposes it: the reference every other runtime is held to."""

    name = "tensorflow"

    def __init__(self, model_dir: str | Path, tags: list[str], key: str):
        self._tf = import_tensorflow()
        self.loaded = load_saved_model(model_dir, tags)
        self.signature_fn = self.loaded.signatures[key]

    def __call__(self, feeds: Feeds) -> dict[str, np.ndarray]:
        tensors = {name: self._tf.constant(value) for name, value in feeds.items()}
        try:
            outputs = self.signature_fn(**tensors)
        except self._tf.errors.OpError as exc:
            raise ModelRunError(f"the signature failed: {first_meaningful_line(exc.message)}") from exc
        return {name: value.numpy() for name, value in outputs.items()}


_loaded: dict[tuple[str, tuple[str, ...], str], TFSignatureRunner] = {}


def load_signature_runner(model_dir: str | Path, tags: list[str], key: str) -> TFSignatureRunner:
    """Load once per process: jobs sharing a model process reuse the loaded model."""
    cache_key = (str(model_dir), tuple(tags), key)
    if cache_key not in _loaded:
        _loaded[cache_key] = TFSignatureRunner(model_dir, tags, key)
    return _loaded[cache_key]


class KerasModelRunner:
    """The same signature through the Keras 3 functional wrapper, called as users would: model.predict."""

    name = "keras"

    def __init__(self, tf_runner: TFSignatureRunner, signature: SignatureSpec, feeds: Feeds | None = None):
        """An input of unknown rank takes its rank from feeds, the inputs the wrapper will be called with."""
        from modelgate.keras_wrapper import build_keras_model

        ranks = {name: np.ndim(value) for name, value in feeds.items()} if feeds else None
        self.model = build_keras_model(tf_runner.signature_fn, signature, ranks)
        self._tf = import_tensorflow()

    def infer(self, feeds: Feeds) -> dict[str, np.ndarray]:
        """A direct call, as a serving path would make it, without predict()'s per-call data pipeline."""
        return {name: np.asarray(value) for name, value in self.model(feeds, training=False).items()}

    def __call__(self, feeds: Feeds) -> dict[str, np.ndarray]:
        batch = max((len(v) for v in feeds.values() if np.ndim(v) > 0), default=1)
        # Keras' NumPy adapter refuses object arrays, which is how strings travel; a string tensor it takes.
        feeds = {name: self._tf.constant(v) if v.dtype == object else v for name, v in feeds.items()}
        outputs = self.model.predict(feeds, batch_size=batch, verbose=0)
        return {name: np.asarray(value) for name, value in outputs.items()}


class OnnxRuntimeRunner:
    name = "onnxruntime"

    def __init__(self, onnx_path: str | Path, providers: list[str] | None = None, intra_op_threads: int = 0,
                 inter_op_threads: int = 0):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = inter_op_threads
        self.session = ort.InferenceSession(
            str(onnx_path), sess_options=options, providers=providers or ["CPUExecutionProvider"]
        )
        self.providers = self.session.get_providers()
        self.graph_optimization_level = str(options.graph_optimization_level).rsplit(".", 1)[-1]
        self._output_names = [o.name for o in self.session.get_outputs()]

    def __call__(self, feeds: Feeds) -> dict[str, np.ndarray]:
        return dict(zip(self._output_names, self.session.run(self._output_names, feeds)))
