"""Common real architectures, built with random weights (nothing downloaded) the way their own tools export
them: the op scan must let every one of them through (no false refusals)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from modelgate.execution.quiet import import_tensorflow

tf = import_tensorflow()


def _export(model, directory: Path) -> Path:
    model.export(str(directory), format="tf_saved_model", verbose=False)
    return directory


def mobilenet_v2(directory: Path) -> Path:
    """keras.applications.MobileNetV2, weights=None, at a small input."""
    import keras

    keras.utils.set_random_seed(0)
    return _export(keras.applications.MobileNetV2(input_shape=(64, 64, 3), weights=None, classes=10), directory)


def lstm(directory: Path) -> Path:
    """An LSTM over variable-length sequences (a While loop over TensorLists in TF2)."""
    import keras

    keras.utils.set_random_seed(1)
    sequence = keras.Input((None, 4), name="sequence")
    hidden = keras.layers.LSTM(8, name="lstm")(keras.layers.Masking(name="masking")(sequence))
    return _export(keras.Model(sequence, keras.layers.Dense(2, name="scores")(hidden)), directory)


def keras2_lstm(directory: Path) -> Path:
    """A Keras 2 (tf_keras) LSTM saved with model.save(dir): its generic kernel and the cuDNN one grappler
    swaps in on a GPU, both in the function library."""
    import tf_keras

    tf_keras.utils.set_random_seed(1)
    sequence = tf_keras.Input((None, 4), name="sequence")
    scores = tf_keras.layers.Dense(2, name="scores")(tf_keras.layers.LSTM(8, name="lstm")(sequence))
    tf_keras.Model(sequence, scores).save(str(directory))
    return directory


def text_vectorization(directory: Path) -> Path:
    """A Keras TextVectorization text classifier: strings in, a lookup table built from the adapted vocabulary."""
    import keras

    keras.utils.set_random_seed(2)
    vectorize = keras.layers.TextVectorization(max_tokens=20, output_sequence_length=6, name="vectorize")
    vectorize.adapt(["the cat sat", "a dog ran far", "the dog sat on the mat"])
    text = keras.Input((1,), dtype="string", name="text")
    embedded = keras.layers.Embedding(20, 4, name="embed")(vectorize(text))
    pooled = keras.layers.GlobalAveragePooling1D(name="pool")(embedded)
    return _export(keras.Model(text, keras.layers.Dense(2, name="scores")(pooled)), directory)


def save_tf1(directory: Path, build_graph) -> Path:
    """A graph-mode model as SavedModelBuilder writes it: build_graph() makes the graph and returns the serving
    signature's inputs and outputs, the main_op, and the files to ship as assets (None: none)."""
    v1 = tf.compat.v1
    with tf.Graph().as_default(), v1.Session() as session:
        inputs, outputs, main_op, assets = build_graph()
        builder = v1.saved_model.Builder(str(directory))
        builder.add_meta_graph_and_variables(
            session, ["serve"], main_op=main_op, assets_collection=assets,
            signature_def_map={"serving_default": v1.saved_model.predict_signature_def(inputs, outputs)},
        )
        builder.save()
    return directory


def text_file_table(path: str):
    """A TF1 lookup table from words to their line numbers in a text file."""
    initializer = tf.compat.v1.lookup.TextFileInitializer(
        path, tf.string, tf.lookup.TextFileIndex.WHOLE_LINE, tf.int64, tf.lookup.TextFileIndex.LINE_NUMBER
    )
    return tf.lookup.StaticHashTable(initializer, -1)


def tf1_vocabulary_table(directory: Path) -> Path:
    """A TF1 model whose lookup table is filled at load from a vocabulary file in its assets."""
    v1 = tf.compat.v1
    vocabulary = directory.parent / f"{directory.name}-vocabulary.txt"
    vocabulary.write_text("low\nmedium\nhigh\n")

    def build_graph():
        words = v1.placeholder(tf.string, [None], name="words")
        ids = text_file_table(str(vocabulary)).lookup(words)
        return {"words": words}, {"ids": ids}, v1.tables_initializer(), v1.get_collection(v1.GraphKeys.ASSET_FILEPATHS)

    return save_tf1(directory, build_graph)


def tf2_vocabulary_asset(directory: Path) -> Path:
    """A tf.Module whose table reads a tf.saved_model.Asset (TF2's way to ship a vocabulary)."""
    vocabulary = directory.parent / f"{directory.name}-vocabulary.txt"
    vocabulary.write_text("red\ngreen\nblue\n")

    class Vocabulary(tf.Module):
        def __init__(self):
            super().__init__()
            self.vocabulary = tf.saved_model.Asset(str(vocabulary))
            self.table = tf.lookup.StaticHashTable(
                tf.lookup.TextFileInitializer(
                    self.vocabulary, tf.string, tf.lookup.TextFileIndex.WHOLE_LINE,
                    tf.int64, tf.lookup.TextFileIndex.LINE_NUMBER,
                ),
                -1,
            )

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="words")])
        def __call__(self, words):
            return {"ids": self.table.lookup(words)}

    module = Vocabulary()
    tf.saved_model.save(module, str(directory), signatures={"serving_default": module.__call__})
    return directory


def bert_backbone(directory: Path) -> Path:
    """keras-hub's BertBackbone from constructor arguments: token ids, segment ids, padding mask."""
    import keras
    import keras_hub

    keras.utils.set_random_seed(3)
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=64, num_layers=2, num_heads=2, hidden_dim=16, intermediate_dim=32, max_sequence_length=16,
    )
    return _export(backbone, directory)


def dropout_and_random(directory: Path) -> Path:
    """Stateful random noise, a variable update and tf.print to stderr in serving: the reviewed stateful set."""

    class Noisy(tf.Module):
        def __init__(self):
            super().__init__()
            self.calls = tf.Variable(0, dtype=tf.int64)
            self.kernel = tf.Variable(np.ones((2, 2), "float32"))

        @tf.function(input_signature=[tf.TensorSpec([None, 2], tf.float32, name="x")])
        def __call__(self, x):
            self.calls.assign_add(1)
            noise = tf.random.uniform(tf.shape(x), maxval=1e-6)
            tf.print("calls:", self.calls, output_stream=sys.stderr)
            return {"y": tf.matmul(x + noise, self.kernel)}

    module = Noisy()
    tf.saved_model.save(module, str(directory), signatures={"serving_default": module.__call__})
    return directory


BENIGN_ARCHITECTURES = {
    "mobilenet_v2": mobilenet_v2, "lstm": lstm, "keras2_lstm": keras2_lstm, "text_vectorization": text_vectorization,
    "tf1_vocabulary_table": tf1_vocabulary_table, "tf2_vocabulary_asset": tf2_vocabulary_asset,
    "bert_backbone": bert_backbone, "dropout_and_random": dropout_and_random,
}


def tensorflow_text(directory: Path) -> Path:
    """A model using TF Text's custom ops: serving_default scores dependency trees (MaxSpanningTree, numeric
    inputs), tokenize splits text (TFText>WhitespaceTokenizeWithOffsetsV2). Loading it needs tensorflow_text
    imported first (--op-library tensorflow_text). Imported through modelgate, so that its ops count as the
    library's, not TensorFlow's own."""
    from modelgate.model.op_allowlist import import_op_libraries

    import_op_libraries(["tensorflow_text"])
    import tensorflow_text as text

    class Parser(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 4, 4], tf.float32, name="scores")])
        def __call__(self, scores):
            num_nodes = tf.fill(tf.shape(scores)[:1], 4)
            max_scores, heads = text.max_spanning_tree(num_nodes, scores)
            return {"tree_score": max_scores, "heads": heads}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
        def tokenize(self, sentences):
            return {"token_counts": text.WhitespaceTokenizer().tokenize(sentences).row_lengths()}

    module = Parser()
    tf.saved_model.save(module, str(directory), signatures={"serving_default": module.__call__, "tokenize": module.tokenize})
    return directory
