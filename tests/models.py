"""Real SavedModels, built by the tests in the shapes users bring them."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from modelgate.execution.quiet import import_tensorflow

tf = import_tensorflow()


def _save_serving(module, directory: Path) -> Path:
    tf.saved_model.save(module, str(directory), signatures={"serving_default": module.__call__})
    return directory


def keras_export(directory: Path) -> Path:
    """(a) A Keras 3 model exported with model.export(), called through serving_default."""
    from modelgate.model.samples import build_sample_model

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


# --- Inputs real models take: table indices, plain strings, serialized tf.Example ---

def bert_backbone(directory: Path) -> Path:
    """A keras-hub BERT backbone (token ids, segment ids, padding mask) exported with model.export(), as
    keras-hub's Backbone (a keras.Model) exports; random weights, built offline from its arguments."""
    import keras
    import keras_hub

    keras.utils.set_random_seed(6)
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=100, num_layers=2, num_heads=2, hidden_dim=32, intermediate_dim=64, max_sequence_length=16
    )
    backbone.export(str(directory), format="tf_saved_model", verbose=False)
    return directory


def lstm_sequences(directory: Path) -> Path:
    """Token ids of any length (sequence dimension None), 0 as padding (mask_zero), into an LSTM."""
    import keras

    keras.utils.set_random_seed(7)
    ids = keras.Input(shape=(None,), dtype="int32", name="ids")
    hidden = keras.layers.LSTM(8, name="lstm")(keras.layers.Embedding(30, 8, mask_zero=True, name="embedding")(ids))
    score = keras.layers.Dense(2, name="score")(hidden)
    keras.Model(ids, {"score": score}).export(str(directory), format="tf_saved_model", verbose=False)
    return directory


TEXT_VOCABULARY = ["the", "cat", "sat", "on", "mat", "a", "dog", "ate", "my", "homework"]


def text_classifier(directory: Path) -> Path:
    """Raw text in (one string per row), a TextVectorization layer adapted on a small corpus, class logits out."""
    import keras

    keras.utils.set_random_seed(8)
    vectorize = keras.layers.TextVectorization(max_tokens=16, output_sequence_length=6, name="vectorize")
    vectorize.adapt([" ".join(TEXT_VOCABULARY), "the cat sat on the mat", "a dog ate my homework"])
    text = keras.Input(shape=(1,), dtype="string", name="text")
    embedded = keras.layers.Embedding(16, 8, name="embedding")(vectorize(text))
    pooled = keras.layers.GlobalAveragePooling1D(name="pool")(embedded)
    logits = keras.layers.Dense(3, name="logits")(pooled)
    keras.Model(text, {"logits": logits}).export(str(directory), format="tf_saved_model", verbose=False)
    return directory


FRUITS = ["apple", "banana", "cherry", "damson"]


class _Vocabulary(tf.Module):
    def __init__(self, vocabulary_file: Path):
        super().__init__()
        self.vocabulary = tf.saved_model.Asset(str(vocabulary_file))
        lines = tf.lookup.TextFileIndex
        initializer = tf.lookup.TextFileInitializer(
            self.vocabulary, tf.string, lines.WHOLE_LINE, tf.int64, lines.LINE_NUMBER
        )
        self.table = tf.lookup.StaticHashTable(initializer, default_value=-1)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="words")])
    def __call__(self, words):
        ids = self.table.lookup(words)
        return {"ids": ids, "known": ids >= 0}


def vocabulary_table(directory: Path) -> Path:
    """Words to ids through a lookup table read from the SavedModel's own asset file (assets/fruits.txt)."""
    source = directory.parent / f"{directory.name}-source" / "fruits.txt"
    source.parent.mkdir(parents=True)
    source.write_text("".join(f"{word}\n" for word in FRUITS))
    return _save_serving(_Vocabulary(source), directory)


def tf1_item_ids(directory: Path) -> Path:
    """A TF1 graph model: int64 item ids, cast, into embedding_lookup on a reference variable of 5 rows."""
    v1 = tf.compat.v1
    with tf.Graph().as_default(), v1.Session() as session:
        ids = v1.placeholder(tf.int64, [None, 3], name="item_ids")
        items = v1.Variable(np.arange(10, dtype="float32").reshape(5, 2), name="items", use_resource=False)
        scores = tf.reduce_sum(v1.nn.embedding_lookup(items, tf.cast(ids, tf.int32)), axis=1, name="scores")
        session.run(v1.global_variables_initializer())
        builder = v1.saved_model.Builder(str(directory))
        signature = v1.saved_model.predict_signature_def({"item_ids": ids}, {"scores": scores})
        builder.add_meta_graph_and_variables(session, ["serve"], signature_def_map={"serving_default": signature})
        builder.save()
    return directory


TAGS = ["sports", "news", "music"]


def estimator_classify(directory: Path) -> Path:
    """A classifier exported the way tf.estimator's export_saved_model wrote them (tf.estimator is gone from
    TF 2.21): SavedModelBuilder, a serialized tf.Example placeholder 'input_example_tensor' parsed by a
    ParseExample op (the op TF 1.x wrote) with dense float, dense int64 and sparse string features, an
    embedding looked up by the int feature, a vocabulary table on the strings (filled by legacy_init_op),
    and classify (serving_default, classification) and predict signatures."""
    v1 = tf.compat.v1
    with tf.Graph().as_default(), v1.Session() as session:
        examples = v1.placeholder(tf.string, [None], name="input_example_tensor")
        tag_indices, tag_values, _, (x, bucket) = tf.raw_ops.ParseExample(
            serialized=examples, names=tf.constant([], tf.string), sparse_keys=[tf.constant("tags")],
            dense_keys=[tf.constant("x"), tf.constant("bucket")],
            dense_defaults=[tf.constant([], tf.float32), tf.constant([], tf.int64)],
            sparse_types=[tf.string], dense_shapes=[[2], [1]],
        )
        rng = np.random.default_rng(9)
        embeddings = v1.Variable(rng.standard_normal((3, 2)).astype("float32"), name="bucket_embedding",
                                 use_resource=False)
        embedded = v1.nn.embedding_lookup(embeddings, tf.reshape(bucket, [-1]))
        table = tf.lookup.StaticHashTable(tf.lookup.KeyValueTensorInitializer(TAGS, [0, 1, 2], tf.string, tf.int64), -1)
        known = tf.cast(table.lookup(tag_values[0]) >= 0, tf.float32)
        known_tags = tf.math.unsorted_segment_sum(known, tag_indices[0][:, 0], tf.shape(examples)[0])
        features = tf.concat([x, embedded, known_tags[:, None]], axis=1)
        weights = v1.Variable(rng.standard_normal((5, 3)).astype("float32"), name="weights")
        logits = tf.matmul(features, weights, name="logits")
        scores = tf.nn.softmax(logits, name="probabilities")
        classes = tf.tile(tf.constant([["a", "b", "c"]]), [tf.shape(examples)[0], 1])
        classify = v1.saved_model.classification_signature_def(examples, classes, scores)
        predict = v1.saved_model.predict_signature_def(
            {"examples": examples}, {"logits": logits, "probabilities": scores}
        )
        session.run(v1.global_variables_initializer())
        builder = v1.saved_model.Builder(str(directory))
        builder.add_meta_graph_and_variables(
            session, ["serve"], legacy_init_op=v1.tables_initializer(),
            signature_def_map={"serving_default": classify, "classification": classify, "predict": predict},
        )
        builder.save()
    return directory
# --- TF1 graphs the TF2 loader serves badly or not at all; outputs of unknown shape ---

def _save_tf1(directory: Path, session, signatures: dict, **init) -> Path:
    builder = tf.compat.v1.saved_model.Builder(str(directory))
    builder.add_meta_graph_and_variables(session, ["serve"], signature_def_map=signatures, **init)
    builder.save()
    return directory


def tf1_declared_scalars(directory: Path) -> Path:
    """A TF1 predict signature that declares its input and output scalars while the graph takes and gives
    [N, 1] (an exporter that wrote the per-example shape): tf.saved_model.load refuses it ('Shapes must be
    equal rank, but are 2 and 0'), a TF1 Session serves it."""
    v1 = tf.compat.v1
    with tf.Graph().as_default(), v1.Session() as session:
        x = v1.placeholder(tf.float32, [None, 1], name="x")
        weight = v1.get_variable("weight", initializer=np.array([[2.0]], "float32"))
        y = tf.add(tf.matmul(x, weight), 1.0, name="y")
        x_info, y_info = v1.saved_model.build_tensor_info(x), v1.saved_model.build_tensor_info(y)
        for info in (x_info, y_info):
            info.tensor_shape.CopyFrom(tf.TensorShape([]).as_proto())
        session.run(v1.global_variables_initializer())
        signature = v1.saved_model.build_signature_def({"x": x_info}, {"y": y_info}, "tensorflow/serving/predict")
        return _save_tf1(directory, session, {"serving_default": signature})


def tf1_batch_one_regress(directory: Path) -> Path:
    """A TF1 regress signature declaring [-1, 1] outputs whose graph appends a constant bias column of one
    row: it runs at batch 1 only ('ConcatOp : Dimension 0 in both shapes must be equal')."""
    v1 = tf.compat.v1
    with tf.Graph().as_default(), v1.Session() as session:
        features = v1.placeholder(tf.float32, [None, 3], name="features")
        weight = v1.get_variable("weight", initializer=np.array([[0.5], [-1.0], [2.0], [0.25]], "float32"))
        with_bias = tf.concat([features, tf.constant([[1.0]])], axis=1)
        outputs = tf.reshape(tf.matmul(with_bias, weight), [-1, 1], name="outputs")
        session.run(v1.global_variables_initializer())
        outputs_info = v1.saved_model.build_tensor_info(outputs)  # [1, 1], as TF1 infers it from the bias column
        outputs_info.tensor_shape.CopyFrom(tf.TensorShape([None, 1]).as_proto())
        signature = v1.saved_model.build_signature_def(
            {"inputs": v1.saved_model.build_tensor_info(features)}, {"outputs": outputs_info},
            "tensorflow/serving/regress",
        )
        return _save_tf1(directory, session, {"serving_default": signature})


def tf1_sparse_input(directory: Path) -> Path:
    """A TF1 model fed a SparseTensor (tf.compat.v1.sparse_placeholder): its signature input is coo_sparse."""
    v1 = tf.compat.v1
    with tf.Graph().as_default(), v1.Session() as session:
        features = v1.sparse_placeholder(tf.float32, [None, 5], name="features")
        weight = v1.get_variable("weight", initializer=np.arange(10, dtype="float32").reshape(5, 2) - 4.0)
        scores = tf.sparse.sparse_dense_matmul(features, weight)
        session.run(v1.global_variables_initializer())
        info = v1.saved_model.build_tensor_info
        signature = v1.saved_model.build_signature_def(
            {"features": info(features)}, {"scores": info(scores)}, "tensorflow/serving/predict"
        )
        return _save_tf1(directory, session, {"serving_default": signature})


class _TableExport(tf.Module):
    def __init__(self):
        super().__init__()
        initializer = tf.lookup.KeyValueTensorInitializer(tf.constant([1, 3, 5], tf.int64), [0.5, 1.5, 2.5])
        self.table = tf.lookup.StaticHashTable(initializer, default_value=-1.0)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.int64, name="ids")])
    def __call__(self, ids):
        keys, values = self.table.export()
        return {"scores": self.table.lookup(ids), "keys": keys, "values": values}


def table_export(directory: Path) -> Path:
    """A lookup table's contents as outputs (table.export()): tensors of unknown rank."""
    return _save_serving(_TableExport(), directory)
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
