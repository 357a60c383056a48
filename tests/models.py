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


# --- Formats users bring: TF1 graph-mode, several MetaGraphs, pbtxt, Keras 2, TF Serving base paths ---

def example_record(features: list[float]) -> bytes:
    """A serialized tf.Example with the float feature 'f' that the TF1 model's classify/regress signatures parse."""
    feature = tf.train.Feature(float_list=tf.train.FloatList(value=features))
    return tf.train.Example(features=tf.train.Features(feature={"f": feature})).SerializeToString()


def tf1_graph(directory: Path, as_text: bool = False) -> Path:
    """A graph-mode SavedModel as TF1 wrote them: SavedModelBuilder, a reference-typed (VariableV2) weight,
    a lookup table set up by the init op (legacy_init_op in .pb, main_op in .pbtxt), predict/classify/regress
    signatures, tf.Example string inputs, an input of unknown rank, a signature without inputs, and a second
    MetaGraph tagged serve,gpu."""
    v1 = tf.compat.v1
    info = v1.saved_model.build_tensor_info
    with tf.Graph().as_default(), v1.Session() as session:
        x = v1.placeholder(tf.float32, [None, 3], name="x")
        anything = v1.placeholder(tf.float32, None, name="anything")
        examples = v1.placeholder(tf.string, [None], name="examples")
        weight = v1.Variable(np.arange(6, dtype="float32").reshape(3, 2) / 6, name="weight", use_resource=False)
        y = tf.matmul(x, weight, name="y")
        parsed = v1.io.parse_example(examples, {"f": v1.FixedLenFeature([3], tf.float32)})
        logits = tf.matmul(parsed["f"], weight)
        scores = tf.nn.softmax(logits, name="scores")
        labels = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(tf.constant([0, 1], tf.int64), tf.constant(["low", "high"])), "?"
        )
        classes = tf.reshape(labels.lookup(tf.argmax(scores, 1)), [-1, 1])
        signatures = {
            "serving_default": v1.saved_model.predict_signature_def({"x": x}, {"y": y}),
            "classify": v1.saved_model.classification_signature_def(examples, classes, scores),
            "regress": v1.saved_model.regression_signature_def(examples, tf.reduce_sum(logits, 1, keepdims=True)),
            "constants": v1.saved_model.build_signature_def(
                {}, {"bias": info(tf.constant([1.0, 2.0]))}, "tensorflow/serving/predict"
            ),
            "total": v1.saved_model.predict_signature_def({"anything": anything}, {"total": tf.reduce_sum(anything)}),
            "weights": v1.saved_model.build_signature_def(
                {"x": info(x)}, {"weight": info(weight), "y": info(y)}, "tensorflow/serving/predict"
            ),
        }
        session.run(v1.global_variables_initializer())
        builder = v1.saved_model.Builder(str(directory))
        init = {"main_op" if as_text else "legacy_init_op": v1.tables_initializer()}
        builder.add_meta_graph_and_variables(session, ["serve"], signature_def_map=signatures, **init)
        builder.add_meta_graph(["serve", "gpu"], signature_def_map={"serving_default": signatures["serving_default"]})
        builder.save(as_text=as_text)
    return directory


def tf1_pbtxt(directory: Path) -> Path:
    return tf1_graph(directory, as_text=True)


def keras2_save(directory: Path) -> Path:
    """A Keras 2 model saved by tf_keras model.save(dir): a SavedModel with keras_metadata.pb."""
    import tf_keras

    tf_keras.utils.set_random_seed(4)
    features = tf_keras.Input((4,), name="features")
    hidden = tf_keras.layers.Dense(8, activation="relu", name="hidden")(features)
    probabilities = tf_keras.layers.Dense(3, activation="softmax", name="probabilities")(hidden)
    tf_keras.Model(features, probabilities).save(str(directory))
    return directory


class _Scorer(tf.Module):
    """Version 1 of a served model; version 2 adds an output, which callers of version 1 can ignore."""

    def __init__(self, with_confidence: bool):
        super().__init__()
        self.with_confidence = with_confidence
        self.kernel = tf.Variable(np.random.default_rng(5).standard_normal((4, 2)).astype("float32"))

    @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="features")])
    def __call__(self, features):
        scores = tf.matmul(features, self.kernel)
        outputs = {"scores": scores}
        if self.with_confidence:
            outputs["confidence"] = tf.reduce_max(tf.nn.softmax(scores), axis=1)
        return outputs


class _RenamedScorer(tf.Module):
    """A breaking change: the input is renamed and widened to float64."""

    @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float64, name="inputs")])
    def __call__(self, inputs):
        return {"scores": tf.cast(inputs[:, :2], tf.float32)}


def serving_base(directory: Path) -> Path:
    """A TF Serving base path: versions 1 and 2 (the latest), and a folder that is not a version."""
    _save_serving(_Scorer(with_confidence=False), directory / "1")
    _save_serving(_Scorer(with_confidence=True), directory / "2")
    (directory / "notes").mkdir()
    return directory


def renamed_input(directory: Path) -> Path:
    return _save_serving(_RenamedScorer(), directory)


# --- Signature rules ---

class _Unnamed(tf.Module):
    @tf.function(input_signature=[tf.TensorSpec([1, 4], tf.float32, name="x")])
    def __call__(self, x):
        return (tf.reduce_sum(x, axis=1), tf.reduce_max(x, axis=1))


def unnamed_fixed_batch(directory: Path) -> Path:
    """Outputs named output_0, output_1 by the exporter, and a batch dimension fixed at 1."""
    return _save_serving(_Unnamed(), directory)


class _BatchMixing(tf.Module):
    @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32, name="x")])
    def __call__(self, x):
        return {"centred": x - tf.reduce_mean(x, axis=0)}


def batch_mixing(directory: Path) -> Path:
    """Each row depends on the others (batch statistics): a row alone gives another answer."""
    return _save_serving(_BatchMixing(), directory)


# --- Models nobody should trust: they hang, crash the interpreter, or eat memory when run ---

_ROW = tf.TensorSpec([None, 2], tf.float32, name="x")


class _Spins(tf.Module):
    @tf.function(input_signature=[_ROW])
    def __call__(self, x):
        # Adding 1 stops changing a float32 at 2**24 and stays finite: the loop never ends.
        spun = tf.while_loop(lambda v: tf.reduce_all(tf.math.is_finite(v)), lambda v: v + 1.0, [x])[0]
        return {"never": spun}


def hangs(directory: Path) -> Path:
    return _save_serving(_Spins(), directory)


class _Aborts(tf.Module):
    @tf.function(input_signature=[_ROW])
    def __call__(self, x):
        with tf.control_dependencies([tf.raw_ops.Abort(error_msg="the model aborts the process")]):
            return {"y": tf.identity(x)}


def aborts(directory: Path) -> Path:
    """Kills its process with SIGABRT when called."""
    return _save_serving(_Aborts(), directory)


class _Hoards(tf.Module):
    @tf.function(input_signature=[_ROW])
    def __call__(self, x):
        hoard = tf.fill([1024, 1024, 1024], x[0, 0])  # 4 GiB, from an input so nothing folds it away
        return {"total": tf.reduce_sum(hoard * x[0, 1], axis=[1, 2])}


def eats_memory(directory: Path) -> Path:
    return _save_serving(_Hoards(), directory)


class _WritesFile(tf.Module):
    def __init__(self, target: str):
        super().__init__()
        self.target = target

    @tf.function(input_signature=[_ROW])
    def __call__(self, x):
        with tf.control_dependencies([tf.io.write_file(self.target, "written by the model")]):
            return {"y": 2.0 * x}


def writes_file(directory: Path, target: Path) -> Path:
    """Writes `target` (outside anything it was given) whenever it is called: WriteFile, which the op scan refuses
    unless allowed, so that only the OS sandbox stands in its way."""
    return _save_serving(_WritesFile(str(target)), directory)
