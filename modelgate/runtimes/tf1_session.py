"""A TF1 Session: a TF1 graph SavedModel as TF Serving runs it, the reference runtime of TF1 graphs."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from modelgate.execution.quiet import import_tensorflow
from modelgate.model.savedmodel import TF1_GRAPH, rejected_unless_loaded
from modelgate.numerics.inputs import Feeds
from modelgate.runtimes import CPU, GPU, SAVEDMODEL, Runner, Runtime, Signature
from modelgate.runtimes.tensorflow import RUNTIME as TENSORFLOW
from modelgate.runtimes.tensorflow import loaded_once, signature_failed, sparse_components, the_signature

RUNTIME = Runtime(
    name="tf1-session", artifact_format=SAVEDMODEL, devices=(CPU, GPU), packages=("tensorflow",), module=__name__,
    model_formats=(TF1_GRAPH,), reference=True, shares_pool_of=TENSORFLOW.name,
)


def warm_up() -> None:
    import_tensorflow()


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


class TFSessionRunner(Runner):
    """A TF1 graph model as TF Serving runs it: loaded into a Session, fed and fetched by the signature's
    tensor names. TF2's loader wraps the graph in functions shaped by the signature's declared shapes and
    refuses graphs whose tensors disagree with them; a Session never looks at those."""

    name = RUNTIME.name

    def __init__(self, model_dir: str | Path, tags: list[str], key: str):
        super().__init__()
        self.model_dir, self.tags, self.key = model_dir, list(tags), key

    def activate_impl(self) -> None:
        self._tf = tf = import_tensorflow()
        self.config = session_config()
        self.session = tf.compat.v1.Session(graph=tf.Graph(), config=self.config)
        with rejected_unless_loaded("A TF1 Session"), self.session.graph.as_default():
            meta_graph = tf.compat.v1.saved_model.load(self.session, self.tags, str(self.model_dir))
        signature = meta_graph.signature_def[self.key]
        self._inputs = dict(signature.inputs)
        self._fetches = {name: info.name for name, info in signature.outputs.items()}

    def deactivate_impl(self) -> None:
        self.session.close()
        self.session = None

    def _feed(self, name: str, value: np.ndarray) -> dict[str, np.ndarray]:
        info = self._inputs[name]
        if info.WhichOneof("encoding") != "coo_sparse":
            return {info.name: value}
        names = (info.coo_sparse.indices_tensor_name, info.coo_sparse.values_tensor_name,
                 info.coo_sparse.dense_shape_tensor_name)
        return dict(zip(names, sparse_components(value)))

    def infer_impl(self, feeds: Feeds) -> dict[str, np.ndarray]:
        feed_dict = {key: array for name, value in feeds.items() for key, array in self._feed(name, value).items()}
        try:
            outputs = self.session.run(self._fetches, feed_dict)
        except (self._tf.errors.OpError, ValueError) as exc:  # ValueError: a feed the graph's shape refuses
            raise signature_failed(exc, self._tf) from exc
        return {name: np.asarray(value) for name, value in outputs.items()}


def load(artifact: str, device: str, intra_op_threads: int, inter_op_threads: int,
         signature: Signature | None = None) -> TFSessionRunner:
    """The Session takes the process's thread counts and devices, as TensorFlow's runtime does."""
    chosen = the_signature(RUNTIME, signature)
    return loaded_once(TFSessionRunner, artifact, chosen.tags, chosen.key)
