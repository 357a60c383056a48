"""Runners: load a model once, then map named numpy inputs to named numpy outputs.

They run inside a sandboxed child process (modelgate.execution.sandbox); nothing here is imported by the parent
before a model has passed static inspection.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from modelgate.description import SignatureSpec
from modelgate.errors import ModelRunError, SignatureFailed
from modelgate.execution.quiet import import_tensorflow
from modelgate.model.savedmodel import first_meaningful_line, load_saved_model, rejected_unless_loaded
from modelgate.numerics.inputs import Feeds


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


def _reason(exc: Exception, tf) -> str:
    return first_meaningful_line(exc.message if isinstance(exc, tf.errors.OpError) else str(exc))


def _failed(exc: Exception, tf) -> SignatureFailed:
    return SignatureFailed(_reason(exc, tf))


class TFSignatureRunner:
    """The raw signature, as tf.saved_model.load exposes it: the reference every other runtime is held to
    (TF1 graph models excepted, see TFSessionRunner)."""

    name = "tensorflow"

    def __init__(self, model_dir: str | Path, tags: list[str], key: str):
        self._tf = import_tensorflow()
        self.loaded = load_saved_model(model_dir, tags)
        self.signature_fn = self.loaded.signatures[key]
        self._parameters = set(self.signature_fn.structured_input_signature[1])

    def _arguments(self, name: str, value: np.ndarray) -> dict:
        if name in self._parameters or f"{name}_indices" not in self._parameters:
            return {name: self._tf.constant(value)}
        return {key: self._tf.constant(part) for key, part in sparse_arguments(name, *sparse_components(value)).items()}

    def __call__(self, feeds: Feeds) -> dict[str, np.ndarray]:
        tensors = {key: tensor for name, value in feeds.items() for key, tensor in self._arguments(name, value).items()}
        try:
            outputs = self.signature_fn(**tensors)
        except self._tf.errors.OpError as exc:
            raise _failed(exc, self._tf) from exc
        return {name: value.numpy() for name, value in outputs.items()}


def session_config():
    """A TF1 Session keeps its own thread pools and devices: give it the process's, as TF2 functions have them
    (0 threads: TF_NUM_INTRAOP_THREADS / TF_NUM_INTEROP_THREADS, as TF2 reads them). Soft placement, as TF Serving
    loads models: a graph exported on a GPU machine pins its ops to /device:GPU:0, and runs on a CPU here."""
    tf = import_tensorflow()
    config = tf.compat.v1.ConfigProto(
        intra_op_parallelism_threads=tf.config.threading.get_intra_op_parallelism_threads(),
        inter_op_parallelism_threads=tf.config.threading.get_inter_op_parallelism_threads(),
        allow_soft_placement=True,
    )
    if not tf.config.get_visible_devices("GPU"):
        config.device_count["GPU"] = 0
    return config


class TFSessionRunner:
    """A TF1 graph model as TF Serving runs it: loaded into a Session, fed and fetched by the signature's
    tensor names. TF2's loader wraps the graph in functions shaped by the signature's declared shapes and
    refuses graphs whose tensors disagree with them; a Session never looks at those."""

    name = "tf1-session"

    def __init__(self, model_dir: str | Path, tags: list[str], key: str):
        self._tf = tf = import_tensorflow()
        self.config = session_config()
        self.session = tf.compat.v1.Session(graph=tf.Graph(), config=self.config)
        with rejected_unless_loaded("A TF1 Session"), self.session.graph.as_default():
            meta_graph = tf.compat.v1.saved_model.load(self.session, tags, str(model_dir))
        signature = meta_graph.signature_def[key]
        self._inputs = dict(signature.inputs)
        self._fetches = {name: info.name for name, info in signature.outputs.items()}

    def _feed(self, name: str, value: np.ndarray) -> dict[str, np.ndarray]:
        info = self._inputs[name]
        if info.WhichOneof("encoding") != "coo_sparse":
            return {info.name: value}
        names = (info.coo_sparse.indices_tensor_name, info.coo_sparse.values_tensor_name,
                 info.coo_sparse.dense_shape_tensor_name)
        return dict(zip(names, sparse_components(value)))

    def __call__(self, feeds: Feeds) -> dict[str, np.ndarray]:
        feed_dict = {key: array for name, value in feeds.items() for key, array in self._feed(name, value).items()}
        try:
            outputs = self.session.run(self._fetches, feed_dict)
        except (self._tf.errors.OpError, ValueError) as exc:  # ValueError: a feed the graph's shape refuses
            raise _failed(exc, self._tf) from exc
        return {name: np.asarray(value) for name, value in outputs.items()}


TF1_GRAPH = "tf1-graph"
_loaded: dict[tuple, TFSignatureRunner | TFSessionRunner] = {}


def _load_once(runner: type, model_dir: str | Path, tags: list[str], key: str):
    """Load once per process: jobs sharing a model process reuse the loaded model."""
    cache_key = (runner, str(model_dir), tuple(tags), key)
    if cache_key not in _loaded:
        _loaded[cache_key] = runner(model_dir, tags, key)
    return _loaded[cache_key]


def load_signature_runner(model_dir: str | Path, tags: list[str], key: str) -> TFSignatureRunner:
    """The signature as TF2's loader gives it: what the Keras wrapper calls."""
    return _load_once(TFSignatureRunner, model_dir, tags, key)


def load_reference_runner(model_dir: str | Path, tags: list[str], key: str, model_format: str):
    """The runtime every other one is held to, by the SavedModel's format: a TF1 Session for TF1 graphs
    (as TF Serving serves them), the TF2 signature function for everything else."""
    return _load_once(TFSessionRunner if model_format == TF1_GRAPH else TFSignatureRunner, model_dir, tags, key)


def _wrapper_failed(exc: Exception, tf) -> ModelRunError:
    """Keras's errors span lines (the call's arguments, whole arrays) in terminal colours: the stage's message
    keeps the line that says why, the stage's log the rest."""
    return ModelRunError(f"the Keras wrapper failed: {_reason(exc, tf)}")


class KerasModelRunner:
    """The same signature through the Keras 3 functional wrapper, called as users would: model.predict."""

    name = "keras"

    def __init__(self, tf_runner: TFSignatureRunner, signature: SignatureSpec, feeds: Feeds | None = None):
        """An input or output of unknown rank takes its rank from feeds, the inputs the wrapper will be called
        with, and from the signature's outputs on them."""
        from modelgate.runtimes._keras_layer import build_keras_model

        self._tf = import_tensorflow()
        self._keras_errors = (self._tf.errors.OpError, ValueError, TypeError, RuntimeError)
        ranks = {name: np.ndim(value) for name, value in feeds.items()} if feeds else None
        output_ranks = None
        if feeds and any(spec.shape is None for spec in signature.outputs.values()):
            output_ranks = {name: np.ndim(value) for name, value in tf_runner(feeds).items()}
        try:
            self.model = build_keras_model(tf_runner.signature_fn, signature, ranks, output_ranks)
        except self._keras_errors as exc:
            raise _wrapper_failed(exc, self._tf) from exc

    @staticmethod
    def call_form(feeds: Feeds) -> str:
        """How __call__ calls the model on these inputs: with a scalar among them, in one direct call."""
        if any(np.ndim(value) == 0 for value in feeds.values()):
            return "model(inputs) (model.predict splits inputs along a first dimension, which a scalar lacks)"
        return "model.predict"

    def infer(self, feeds: Feeds) -> dict[str, np.ndarray]:
        """A direct call, as a serving path would make it, without predict()'s per-call data pipeline."""
        try:
            outputs = self.model(feeds, training=False)
        except self._keras_errors as exc:
            raise _wrapper_failed(exc, self._tf) from exc
        return {name: np.asarray(value) for name, value in outputs.items()}

    def __call__(self, feeds: Feeds) -> dict[str, np.ndarray]:
        batch = max((len(v) for v in feeds.values() if np.ndim(v) > 0), default=1)
        # Keras' NumPy adapter refuses object arrays, which is how strings travel; a string tensor it takes.
        feeds = {name: self._tf.constant(v) if v.dtype == object else v for name, v in feeds.items()}
        if self.call_form(feeds) != "model.predict":
            return self.infer(feeds)
        try:
            outputs = self.model.predict(feeds, batch_size=batch, verbose=0)
        except self._keras_errors as exc:
            raise _wrapper_failed(exc, self._tf) from exc
        return {name: np.asarray(value) for name, value in outputs.items()}
