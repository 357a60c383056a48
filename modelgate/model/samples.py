"""A small SavedModel to try modelgate on: two named inputs, two named outputs, seeded weights."""

from __future__ import annotations

from pathlib import Path


def build_sample_model(directory: str | Path, seed: int = 7) -> Path:
    """A Keras 3 functional model exported with model.export(), the way training pipelines write them."""
    import keras

    from modelgate.execution.quiet import import_tensorflow

    import_tensorflow()
    keras.utils.set_random_seed(seed)
    features = keras.Input(shape=(16,), name="features")
    context = keras.Input(shape=(4,), name="context")
    hidden = keras.layers.Dense(32, activation="relu", name="hidden")(
        keras.layers.Concatenate(name="joined")([features, context])
    )
    scores = keras.layers.Dense(5, name="scores")(hidden)
    probabilities = keras.layers.Softmax(name="probabilities")(scores)
    model = keras.Model({"features": features, "context": context}, {"scores": scores, "probabilities": probabilities})
    directory = Path(directory)
    model.export(str(directory), format="tf_saved_model", verbose=False)
    return directory
