"""TF Serving's SavedModel warm-up: assets.extra/tf_serving_warmup_requests, a TFRecord file of PredictionLog
records (TF Serving replays at most 1,000 of them when it loads the model).

Both ways: a version that passed gets one, of the very inputs it was validated with, in its registered copy; a
SavedModel that ships one is validated on those records by default, since they are traffic its owners chose.
These run in the TensorFlow pool's child: tensorflow_serving's protos import TensorFlow's.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from modelgate.description import SignatureSpec
from modelgate.errors import InputsError
from modelgate.execution.pools import TENSORFLOW
from modelgate.execution.quiet import import_tensorflow
from modelgate.execution.sandbox import shares_process
from modelgate.numerics.inputs import Feeds, load_npz, no_batch_dimension, read_npz, save_npz

WARMUP_FILE = Path("assets.extra") / "tf_serving_warmup_requests"
MAX_RECORDS = 1000  # what TF Serving reads; records past it are never replayed


def warmup_file(model_dir: str | Path) -> Path | None:
    path = Path(model_dir) / WARMUP_FILE
    return path if path.is_file() else None


@shares_process(TENSORFLOW)
def write_warmup_job(inputs_npz: str, signature: SignatureSpec, model_name: str, destination: str) -> int:
    """One PredictLog record: the batch the validation ran on, for its signature, as TF Serving replays it."""
    tf = import_tensorflow()
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

    request = predict_pb2.PredictRequest(model_spec=model_pb2.ModelSpec(name=model_name, signature_name=signature.key))
    for name, value in read_npz(inputs_npz).items():
        request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
    Path(destination).parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(destination) as writer:
        record = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
        writer.write(record.SerializeToString())
    return 1


class _NotForThisSignature(Exception):
    """A record TF Serving replays against another signature or API (classify, regress): not this one's inputs."""


def _feeds_of(index: int, record: bytes, signature: SignatureSpec) -> Feeds:
    """One record's inputs; ValueError naming the record where TF Serving would refuse it for this signature."""
    tf = import_tensorflow()
    from google.protobuf.message import DecodeError
    from tensorflow_serving.apis import prediction_log_pb2

    try:
        log = prediction_log_pb2.PredictionLog.FromString(record)
    except DecodeError:
        raise ValueError(f"record {index}: {len(record)} bytes that do not parse as a PredictionLog") from None
    if log.WhichOneof("log_type") != "predict_log":
        raise _NotForThisSignature
    request = log.predict_log.request
    if (request.model_spec.signature_name or "serving_default") != signature.key:
        raise _NotForThisSignature
    if set(request.inputs) != set(signature.inputs):
        raise ValueError(f"record {index}: inputs {', '.join(sorted(request.inputs)) or 'none'}, the signature "
                         f"takes {', '.join(sorted(signature.inputs)) or 'none'}")
    feeds = {}
    for name, proto in request.inputs.items():
        value = tf.make_ndarray(proto)
        wanted = signature.inputs[name].dtype
        found = "string" if value.dtype == object else value.dtype.name
        if found != wanted:
            raise ValueError(f"record {index}: input '{name}' holds {found}, the signature takes {wanted}")
        feeds[name] = value
    return feeds


def _joined(batches: list[Feeds], signature: SignatureSpec) -> tuple[Feeds, int]:
    """The records' batches as one, where their shapes allow; else the first record's alone (a signature
    without a batch dimension, or sequences of other lengths). With how many records that is."""
    if no_batch_dimension(signature) or len(batches) == 1:
        return batches[0], 1
    try:
        return {name: np.concatenate([batch[name] for batch in batches]) for name in signature.inputs}, len(batches)
    except ValueError:
        return batches[0], 1


@shares_process(TENSORFLOW)
def read_warmup_job(path: str, signature: SignatureSpec, destination: str) -> tuple[int, list[str]]:
    """The predict records for this signature that TF Serving would replay, as the validation's inputs, saved
    at destination. Returns how many records fed them (0: none was for this signature, nothing saved), and what
    TF Serving would refuse in each record that could not (then nothing is saved either)."""
    tf = import_tensorflow()
    try:
        records = [record.numpy() for record in tf.data.TFRecordDataset(path).take(MAX_RECORDS)]
    except tf.errors.OpError as exc:
        return 0, [f"not a readable TFRecord file ({exc.message.splitlines()[0]})"]
    problems, batches = [], []
    for index, record in enumerate(records):
        try:
            batches.append(_feeds_of(index, record, signature))
        except _NotForThisSignature:
            continue
        except ValueError as exc:
            problems.append(str(exc))
    if problems or not batches:
        return 0, problems
    feeds, used = _joined(batches, signature)
    save_npz(feeds, destination)
    try:
        load_npz(destination, signature)  # the shapes the signature declares
    except InputsError as exc:
        Path(destination).unlink()
        return 0, [str(exc)]
    return used, []
