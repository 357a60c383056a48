"""A Keras 3 face for any SavedModel signature, with one or many inputs.

keras.layers.TFSMLayer binds its inputs positionally and fails on signatures with more than one input
("too many positional arguments", whatever the call form), so this layer calls the signature with keyword
arguments, and build_keras_model gives it one named keras.Input per signature input.
"""

from __future__ import annotations

import keras

from modelgate.schemas import SignatureSpec


class SignatureLayer(keras.layers.Layer):
    """Calls a concrete signature function with a dict of named inputs and returns its dict of outputs."""

    def __init__(self, signature_fn, output_specs: dict[str, tuple[tuple[int | None, ...] | None, str]], **kwargs):
        super().__init__(trainable=False, **kwargs)
        self._signature_fn = signature_fn
        self._output_specs = output_specs

    def call(self, inputs):
        return self._signature_fn(**inputs)

    def compute_output_spec(self, inputs):
        return {name: keras.KerasTensor(shape, dtype=dtype) for name, (shape, dtype) in self._output_specs.items()}


def build_keras_model(signature_fn, signature: SignatureSpec, ranks: dict[str, int] | None = None) -> keras.Model:
    """A functional keras.Model so that model.predict({name: array, ...}) works like any Keras model.

    A keras.Input needs a rank: an input of unknown rank takes the one given in `ranks`, every dimension free."""
    inputs = {}
    for name, spec in signature.inputs.items():
        shape = spec.shape
        if shape is None:
            if ranks is None or name not in ranks:
                raise ValueError(f"input '{name}' has unknown rank; a keras.Input needs a rank")
            shape = [None] * ranks[name]
        inputs[name] = keras.Input(shape=tuple(shape[1:]), batch_size=shape[0] if shape else None,
                                   dtype=spec.dtype, name=name)
    output_specs = {
        name: (tuple(spec.shape) if spec.shape is not None else None, spec.dtype)
        for name, spec in signature.outputs.items()
    }
    layer = SignatureLayer(signature_fn, output_specs, name="signature")
    return keras.Model(inputs=inputs, outputs=layer(inputs), name=f"savedmodel_{signature.key}")
