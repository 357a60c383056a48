"""Real SavedModels, built by the tests in the shapes users bring them."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from modelgate.quiet import import_tensorflow

tf = import_tensorflow()


def _save_serving(module, directory: Path) -> Path:
    tf.saved_model.save(module, str(directory), signatures={"serving_default": module.__call__})
    return directory


def keras_export(directory: Path) -> Path:
    """(a) A Keras 3 model exported with model.export(), called through serving_default."""
    from modelgate.samples import build_sample_model

    return build_sample_model(directory)


class _TwoInputs(tf.Module):
    def __init__(self):
        super().__init__()
        self.kernel = tf.Variable(np.random.default_rng(3).standard_normal((4, 3)).astype("float32"))

    @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="input1"),
                                  tf.TensorSpec([None, 1], tf.float32, name="input2")])
    def predict(self, input1, input2):
        output = tf.matmul(input1, self.kernel) * input2
        return {"output": output, "auxiliary_output": tf.reduce_sum(output, axis=1)}

    @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="x")])
    def embed(self, x):
        return {"embedding": tf.matmul(x, self.kernel)}


def custom_signature(directory: Path) -> Path:
    """(b) A tf.Module whose only signature is my_custom_signature(input1, input2) -> output, auxiliary_output."""
    module = _TwoInputs()
    tf.saved_model.save(module, str(directory), signatures={"my_custom_signature": module.predict})
    return directory


def two_candidates(directory: Path) -> Path:
    """(c) No serving_default and two predict-style signatures: ambiguous."""
    module = _TwoInputs()
    tf.saved_model.save(module, str(directory), signatures={"predict": module.predict, "embed": module.embed})
    return directory


class _Log(tf.Module):
    @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32, name="x")])
    def __call__(self, x):
        return {"log_x": tf.math.log(x - 100.0)}


def nan_outputs(directory: Path) -> Path:
    """Log of a negative number: NaN for any synthetic input, so the finite-outputs check must fail."""
    return _save_serving(_Log(), directory)


class _Strings(tf.Module):
    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
    def __call__(self, text):
        return {"length": tf.strings.length(text)}


def string_input(directory: Path) -> Path:
    return _save_serving(_Strings(), directory)


class _ReadsFiles(tf.Module):
    @tf.function(input_signature=[tf.TensorSpec([], tf.string, name="path")])
    def __call__(self, path):
        return {"contents": tf.io.read_file(path)}


def reads_files(directory: Path) -> Path:
    """A model that reads any file it is given: must be refused before it is loaded."""
    return _save_serving(_ReadsFiles(), directory)


class _Unknown(tf.Module):
    @tf.function(input_signature=[tf.TensorSpec(None, tf.float32, name="anything"),
                                  tf.TensorSpec([None, None, 3], tf.int32, name="ids")])
    def __call__(self, anything, ids):
        return {"total": tf.reduce_sum(anything) + tf.cast(tf.reduce_sum(ids), tf.float32)}


def unknown_dims(directory: Path) -> Path:
    """Unknown rank and unknown non-batch dims, which inspection must keep as such."""
    return _save_serving(_Unknown(), directory)


class _MixedInputs(tf.Module):
    """Four inputs of four dtypes, dynamic batch and spatial dims, three outputs of three dtypes."""

    def __init__(self):
        super().__init__()
        rng = np.random.default_rng(11)
        self.filters = tf.Variable(rng.standard_normal((3, 3, 3, 4)).astype("float32"))
        self.embeddings = tf.Variable(rng.standard_normal((8, 4)).astype("float32"))
        # Large weights: logits spread over tens of units, so a conversion error cannot hide in a flat softmax.
        self.head = tf.Variable((10.0 * rng.standard_normal((9, 10))).astype("float32"))

    @tf.function(input_signature=[
        tf.TensorSpec([None, None, None, 3], tf.float32, name="image"),
        tf.TensorSpec([None, 5], tf.int32, name="token_ids"),
        tf.TensorSpec([None, 1], tf.int64, name="offset"),
        tf.TensorSpec([None, 5], tf.bool, name="mask"),
    ])
    def __call__(self, image, token_ids, offset, mask):
        feature_map = tf.nn.relu(tf.nn.conv2d(image, self.filters, strides=1, padding="SAME"))
        pooled = tf.reduce_mean(feature_map, axis=[1, 2])
        embedded = tf.gather(self.embeddings, token_ids) * tf.cast(mask, tf.float32)[..., None]
        features = tf.concat([pooled, tf.reduce_sum(embedded, axis=1), tf.cast(offset, tf.float32)], axis=1)
        return {
            "logits": tf.matmul(features, self.head),
            "feature_map": feature_map,
            "kept_tokens": tf.reduce_sum(tf.cast(mask, tf.int64), axis=1) + offset[:, 0],
        }


def mixed_inputs(directory: Path) -> Path:
    return _save_serving(_MixedInputs(), directory)


class _ParsesExamples(tf.Module):
    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
    def __call__(self, examples):
        parsed = tf.io.parse_example(examples, {"x": tf.io.FixedLenFeature([3], tf.float32)})
        return {"doubled": parsed["x"] * 2.0}


def parses_examples(directory: Path) -> Path:
    """A serving signature fed serialized tf.Example protos: tf2onnx has no ParseExampleV2."""
    return _save_serving(_ParsesExamples(), directory)


def keras_cnn(directory: Path) -> Path:
    """A small Keras 3 image classifier exported with model.export(): logits and softmax probabilities."""
    import keras

    keras.utils.set_random_seed(5)
    image = keras.Input(shape=(16, 16, 3), name="image")
    hidden = keras.layers.Conv2D(8, 3, activation="relu", name="conv1")(image)
    hidden = keras.layers.MaxPooling2D(name="pool1")(hidden)
    hidden = keras.layers.Conv2D(32, 3, activation="relu", name="conv2")(hidden)
    hidden = keras.layers.GlobalAveragePooling2D(name="pool2")(hidden)
    logits = keras.layers.Dense(10, name="logits", kernel_initializer=keras.initializers.RandomNormal(stddev=2.0))(hidden)
    probabilities = keras.layers.Softmax(name="probabilities")(logits)
    model = keras.Model(image, {"logits": logits, "probabilities": probabilities})
    model.export(str(directory), format="tf_saved_model", verbose=False)
    return directory
