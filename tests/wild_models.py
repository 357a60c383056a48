"""SavedModels of kinds nobody on the team wrote, each built the way its own tools build it: a recommender's
string ids, modules without signatures or inputs, scalar and unbatched signatures, a 2016 export with no
declared dtypes, a graph pinned to a GPU, a chunked SavedModel."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from modelgate.execution.quiet import import_tensorflow

tf = import_tensorflow()
v1 = tf.compat.v1

USER_IDS = [f"user_{n}" for n in range(12)]
ITEM_IDS = [f"item_{n}" for n in range(20)]


def string_id_ranking(directory: Path) -> Path:
    """A TensorFlow Recommenders-style ranking model (tfrs.Model is a keras.Model): user and item ids as strings
    of shape (1,), each through a StringLookup with its vocabulary into an Embedding, a rating out; exported by
    Keras 3."""
    import keras

    keras.utils.set_random_seed(21)
    towers = []
    for name, vocabulary in (("user_id", USER_IDS), ("item_id", ITEM_IDS)):
        ids = keras.Input(shape=(1,), dtype="string", name=name)
        indices = keras.layers.StringLookup(vocabulary=vocabulary, name=f"{name}_lookup")(ids)
        towers.append((ids, keras.layers.Flatten()(keras.layers.Embedding(len(vocabulary) + 1, 8)(indices))))
    hidden = keras.layers.Dense(16, activation="relu")(keras.layers.Concatenate()([vector for _, vector in towers]))
    rating = keras.layers.Dense(1, name="rating")(hidden)
    keras.Model({ids.name: ids for ids, _ in towers}, {"rating": rating}).export(
        str(directory), format="tf_saved_model", verbose=False
    )
    return directory


def tf1_custom_tags_only(directory: Path) -> Path:
    """A TF1 export under a custom tag-set and no signature_def_map: TensorFlow loads it, nothing can serve it."""
    with tf.Graph().as_default(), v1.Session() as session:
        x = v1.placeholder(tf.float32, [None, 2], name="x")
        weight = v1.get_variable("weight", initializer=np.ones((2, 1), "float32"))
        tf.matmul(x, weight, name="y")
        session.run(v1.global_variables_initializer())
        builder = v1.saved_model.Builder(str(directory))
        builder.add_meta_graph_and_variables(session, ["train", "custom"])
        builder.save()
    return directory


class _NoSignatures(tf.Module):
    def __init__(self):
        super().__init__()
        self.scale = tf.Variable(3.0)

    @tf.function(input_signature=[tf.TensorSpec([None, 2], tf.float32)])
    def predict(self, x):
        return self.scale * x


def tf2_no_signatures(directory: Path) -> Path:
    """A TF2 module saved without signatures: its tf.function is a concrete function, not a signature."""
    module = _NoSignatures()
    tf.saved_model.save(module, str(directory), signatures={})
    return directory


class _Arithmetic(tf.Module):
    @tf.function(input_signature=[tf.TensorSpec([], tf.float32, name="a"), tf.TensorSpec([], tf.float32, name="b")])
    def __call__(self, a, b):
        return {"sum": a + b, "product": a * b}


def scalar_arithmetic(directory: Path) -> Path:
    """tf.function over two scalars (rank 0), as an arithmetic module would be saved."""
    module = _Arithmetic()
    tf.saved_model.save(module, str(directory), signatures={"serving_default": module.__call__})
    return directory


class _Grid(tf.Module):
    def __init__(self):
        super().__init__()
        self.kernel = tf.Variable(np.array([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]], "float32"))

    @tf.function(input_signature=[tf.TensorSpec([16, 16], tf.float32, name="grid"),
                                  tf.TensorSpec([], tf.float32, name="dt")])
    def __call__(self, grid, dt):
        laplacian = tf.nn.conv2d(grid[None, :, :, None], self.kernel[:, :, None, None], 1, "SAME")[0, :, :, 0]
        return {"next": grid + dt * laplacian}


def unbatched_grid(directory: Path) -> Path:
    """A simulation step: a fixed 16x16 grid with no batch dimension and a scalar time step."""
    module = _Grid()
    tf.saved_model.save(module, str(directory), signatures={"serving_default": module.__call__})
    return directory


class _Constant(tf.Module):
    @tf.function(input_signature=[])
    def __call__(self):
        return {"version": tf.constant([1.0, 2.0, 3.0])}


def no_inputs(directory: Path) -> Path:
    """A signature that takes nothing and returns a constant (a model's metadata endpoint)."""
    module = _Constant()
    tf.saved_model.save(module, str(directory), signatures={"serving_default": module.__call__})
    return directory


def undeclared_dtypes(directory: Path) -> Path:
    """A 2016 export (TF 0.12's SavedModelBuilder, which did not validate signatures): its signature's TensorInfo
    carries the tensor names and shapes and no dtype, and its variables are reference variables (float32_ref).
    Today's builder refuses such a TensorInfo, so the signature is written whole and its dtypes cleared in
    saved_model.pb."""
    from tensorflow.core.protobuf import saved_model_pb2

    with tf.Graph().as_default(), v1.Session() as session:
        x = v1.placeholder(tf.float32, [None, 3], name="x")
        weight = v1.Variable(np.full((3, 2), 0.5, "float32"), name="weight", use_resource=False)
        y = tf.matmul(x, weight, name="y")
        session.run(v1.global_variables_initializer())
        signature = v1.saved_model.predict_signature_def({"x": x}, {"y": y})
        builder = v1.saved_model.Builder(str(directory))
        builder.add_meta_graph_and_variables(session, ["serve"], signature_def_map={"serving_default": signature})
        builder.save()
    path = directory / "saved_model.pb"
    saved_model = saved_model_pb2.SavedModel.FromString(path.read_bytes())
    signature = saved_model.meta_graphs[0].signature_def["serving_default"]
    for info in (*signature.inputs.values(), *signature.outputs.values()):
        info.ClearField("dtype")
    path.write_bytes(saved_model.SerializeToString())
    return directory


def gpu_pinned(directory: Path) -> Path:
    """A TF1 graph exported on a GPU machine: its variables and ops placed on /device:GPU:0 (the builder keeps
    devices), saved here with soft placement since this machine has none."""
    config = v1.ConfigProto(allow_soft_placement=True)
    with tf.Graph().as_default(), v1.Session(config=config) as session:
        x = v1.placeholder(tf.float32, [None, 4], name="x")
        with tf.device("/device:GPU:0"):
            weight = v1.get_variable("weight", initializer=np.arange(8, dtype="float32").reshape(4, 2) / 8)
            bias = v1.get_variable("bias", initializer=np.array([0.5, -0.5], "float32"))
            y = tf.nn.relu(tf.matmul(x, weight) + bias, name="y")
        session.run(v1.global_variables_initializer())
        signature = v1.saved_model.predict_signature_def({"x": x}, {"y": y})
        builder = v1.saved_model.Builder(str(directory))
        builder.add_meta_graph_and_variables(session, ["serve"], signature_def_map={"serving_default": signature},
                                             clear_devices=False)
        builder.save()
    return directory


def chunked(directory: Path) -> Path:
    """A SavedModel in the proto splitter's chunked format (saved_model.cpb in place of saved_model.pb, as
    TensorFlow writes graphs over 2 GB). Open-source TensorFlow ships neither the splitter's writer nor its
    reader, so this lays the folder out as the splitter does, with a chunk file nothing here can parse: what
    decides the answer is that the folder holds a .cpb and no .pb."""
    scalar_arithmetic(directory)
    (directory / "saved_model.cpb").write_bytes(b"\x91\xba\xc2\x3c\x92\x87\xe1\xa9" + (directory / "saved_model.pb").read_bytes())
    (directory / "saved_model.pb").unlink()
    return directory


def wrong_checkpoint(directory: Path) -> Path:
    """A TF1 export whose variables/ were copied from another model's export (a deployment script that mixed two
    versions up): the graph is whole, the restore fails."""
    import shutil

    gpu_pinned(directory)
    other = undeclared_dtypes(directory.parent / f"{directory.name}-other")
    shutil.rmtree(directory / "variables")
    shutil.copytree(other / "variables", directory / "variables")
    return directory


def with_warmup_requests(directory: Path, records: list[bytes] | None = None) -> Path:
    """A SavedModel shipped with TF Serving warm-up requests, written as TF Serving's guide writes them: PredictLog
    records of real requests in assets.extra/tf_serving_warmup_requests (or the records given, as they are)."""
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

    module = _NoSignatures()
    tf.saved_model.save(module, str(directory), signatures={"serving_default": module.predict})
    if records is None:
        records = []
        for rows in (WARMUP_ROWS[:2], WARMUP_ROWS[2:]):
            request = predict_pb2.PredictRequest(model_spec=model_pb2.ModelSpec(name="scaler",
                                                                               signature_name="serving_default"))
            request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.array(rows, "float32")))
            log = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
            records.append(log.SerializeToString())
    (directory / "assets.extra").mkdir()
    with tf.io.TFRecordWriter(str(directory / "assets.extra" / "tf_serving_warmup_requests")) as writer:
        for record in records:
            writer.write(record)
    return directory


WARMUP_ROWS = [[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]


def with_malformed_warmup_requests(directory: Path) -> Path:
    """Warm-up records of which the second is no PredictionLog (a file truncated or written by another tool)."""
    with_warmup_requests(directory / "good")
    good = next(iter(tf.data.TFRecordDataset(str(directory / "good" / "assets.extra" / "tf_serving_warmup_requests"))))
    return with_warmup_requests(directory / "model", [good.numpy(), b"\x08\x96\x01 not a prediction log"])
