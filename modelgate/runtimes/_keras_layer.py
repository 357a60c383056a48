"""A Keras 3 face for any SavedModel signature, with one or many inputs.

keras.layers.TFSMLayer binds its inputs positionally and fails on signatures with more than one input
("too many positional arguments", whatever the call form), so this layer calls the signature with keyword
arguments, and build_keras_model gives it one named keras.Input per signature input.
"""

from __future__ import annotations

import keras

from modelgate.description import SignatureSpec, TensorSpec
from modelgate.execution.quiet import import_tensorflow
from modelgate.runtimes.tensorflow import sparse_arguments


class SignatureLayer(keras.layers.Layer):
    """Calls a concrete signature function with a dict of named inputs and returns its dict of outputs.

    A SparseTensor input comes in dense, as every runner takes it, and goes to the function as the three
    arguments TF2's loader flattens it into."""

    def __init__(self, signature_fn, output_specs: dict[str, tuple[tuple[int | None, ...], str]],
                 sparse_inputs: frozenset[str] = frozenset(), **kwargs):
        super().__init__(trainable=False, **kwargs)
        self._signature_fn = signature_fn
        self._output_specs = output_specs
        self._sparse_inputs = sparse_inputs

    def call(self, inputs):
        arguments = {}
        for name, value in inputs.items():
            if name not in self._sparse_inputs:
                arguments[name] = value
                continue
            sparse = import_tensorflow().sparse.from_dense(value)
            arguments.update(sparse_arguments(name, sparse.indices, sparse.values, sparse.dense_shape))
        return self._signature_fn(**arguments)

    def compute_output_spec(self, inputs):
        return {name: keras.KerasTensor(shape, dtype=dtype) for name, (shape, dtype) in self._output_specs.items()}


def _known_shape(kind: str, name: str, spec: TensorSpec, ranks: dict[str, int] | None) -> list[int | None]:
    """Keras tensors need a rank: one of unknown rank takes the one given in `ranks`, every dimension free."""
    if spec.shape is not None:
        return spec.shape
    if ranks is None or name not in ranks:
        raise ValueError(f"{kind} '{name}' has unknown rank; a Keras tensor needs a rank")
    return [None] * ranks[name]


def build_keras_model(signature_fn, signature: SignatureSpec, ranks: dict[str, int] | None = None,
                      output_ranks: dict[str, int] | None = None) -> keras.Model:
    """A functional keras.Model so that model.predict({name: array, ...}) works like any Keras model."""
    inputs = {}
    for name, spec in signature.inputs.items():
        shape = _known_shape("input", name, spec, ranks)
        # The whole declared shape: a scalar input is rank 0, with no batch dimension to split off as batch_size.
        inputs[name] = keras.Input(batch_shape=tuple(shape), dtype=spec.dtype, name=name)
    output_specs = {
        name: (tuple(_known_shape("output", name, spec, output_ranks)), spec.dtype)
        for name, spec in signature.outputs.items()
    }
    sparse_inputs = frozenset(name for name, spec in signature.inputs.items() if spec.sparse)
    layer = SignatureLayer(signature_fn, output_specs, sparse_inputs, name="signature")
    return keras.Model(inputs=inputs, outputs=layer(inputs), name=f"savedmodel_{signature.key}")
