"""The Keras wrapper: the SavedModel's signature inside a Keras 3 functional model (modelgate.runtimes._keras_layer),
called as users would call it. Not a reference: it is held to the reference runtime's outputs."""

from __future__ import annotations

import numpy as np

from modelgate.description import SignatureSpec
from modelgate.errors import ModelRunError
from modelgate.execution.quiet import import_tensorflow
from modelgate.model.savedmodel import KERAS2, TF1_GRAPH, TF2
from modelgate.numerics.inputs import Feeds
from modelgate.runtimes import CPU, GPU, SAVEDMODEL, Runner, Runtime, Signature
from modelgate.runtimes.tensorflow import RUNTIME as TENSORFLOW
from modelgate.runtimes.tensorflow import TFSignatureRunner, failure_reason, load_signature_runner, the_signature

RUNTIME = Runtime(
    name="keras", artifact_format=SAVEDMODEL, devices=(CPU, GPU), packages=("tensorflow", "keras"), module=__name__,
    model_formats=(TF1_GRAPH, TF2, KERAS2), shares_pool_of=TENSORFLOW.name,
)
UNBUILT = "the Keras wrapper could not be built (see keras_wrapper_built)"


def warm_up() -> None:
    import_tensorflow()
    import keras  # noqa: F401


def _wrapper_failed(exc: Exception, tf) -> ModelRunError:
    """Keras's errors span lines (the call's arguments, whole arrays) in terminal colours: the stage's message
    keeps the line that says why, the stage's log the rest."""
    return ModelRunError(f"the Keras wrapper failed: {failure_reason(exc, tf)}")


class KerasModelRunner(Runner):
    """The same signature through the Keras 3 functional wrapper: called, as users would, with model.predict;
    infer() is the direct call a serving path makes."""

    name = RUNTIME.name

    def __init__(self, tf_runner: TFSignatureRunner, signature: SignatureSpec, feeds: Feeds | None = None):
        """An input or output of unknown rank takes its rank from feeds, the inputs the wrapper will be called
        with, and from the signature's outputs on them."""
        super().__init__()
        self.tf_runner, self.signature, self.feeds = tf_runner, signature, feeds

    def activate_impl(self) -> None:
        from modelgate.runtimes._keras_layer import build_keras_model

        self._tf = import_tensorflow()
        self._keras_errors = (self._tf.errors.OpError, ValueError, TypeError, RuntimeError)
        tf_runner, signature, feeds = self.tf_runner.activate(), self.signature, self.feeds
        ranks = {name: np.ndim(value) for name, value in feeds.items()} if feeds else None
        output_ranks = None
        if feeds and any(spec.shape is None for spec in signature.outputs.values()):
            output_ranks = {name: np.ndim(value) for name, value in tf_runner(feeds).items()}
        try:
            self.model = build_keras_model(tf_runner.signature_fn, signature, ranks, output_ranks)
        except self._keras_errors as exc:
            raise _wrapper_failed(exc, self._tf) from exc

    def deactivate_impl(self) -> None:
        self.model = None

    @staticmethod
    def call_form(feeds: Feeds) -> str:
        """How __call__ calls the model on these inputs: with a scalar among them, in one direct call."""
        if any(np.ndim(value) == 0 for value in feeds.values()):
            return "model(inputs) (model.predict splits inputs along a first dimension, which a scalar lacks)"
        return "model.predict"

    def infer_impl(self, feeds: Feeds) -> dict[str, np.ndarray]:
        """A direct call, as a serving path would make it, without predict()'s per-call data pipeline."""
        try:
            outputs = self.model(feeds, training=False)
        except self._keras_errors as exc:
            raise _wrapper_failed(exc, self._tf) from exc
        return {name: np.asarray(value) for name, value in outputs.items()}

    def __call__(self, feeds: Feeds) -> dict[str, np.ndarray]:
        self.activate()
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


def load(artifact: str, device: str, intra_op_threads: int, inter_op_threads: int,
         signature: Signature | None = None) -> KerasModelRunner:
    """The wrapper around the signature TF2's loader gives (loaded once per process, as the tensorflow runtime
    loads it), whatever the model's format: that loader refuses some TF1 graphs a Session serves, and
    ModelRejected then says so. It needs the signature's spec; feeds settle its unknown ranks."""
    chosen = the_signature(RUNTIME, signature)
    if chosen.spec is None:
        raise ValueError("the Keras wrapper is built from the signature's spec: give it")
    function = load_signature_runner(artifact, list(chosen.tags), chosen.key)
    return KerasModelRunner(function, chosen.spec, chosen.feeds).activate()
