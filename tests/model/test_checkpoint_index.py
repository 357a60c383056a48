"""Checkpoint indexes as older TensorFlow versions wrote them (snappy-compressed table blocks) pass inspection
and validate; corrupt ones are refused in one line, before TensorFlow's reader could abort the process."""

import shutil

import numpy as np
import pytest

from modelgate.errors import NotASavedModel
from modelgate.execution.jobs import inspection_job
from modelgate.execution.quiet import import_tensorflow
from modelgate.model.samples import build_sample_model
from modelgate.model.variables_check import read_index
from tests.flows import run_flow
from tests.tables import snappy_table

tf = import_tensorflow()
from tensorflow.core.protobuf import tensor_bundle_pb2

KERNEL = b"variables/0/.ATTRIBUTES/VARIABLE_VALUE"


@pytest.fixture(scope="module")
def original(tmp_path_factory):
    return build_sample_model(tmp_path_factory.mktemp("checkpoint") / "model")


def _reencoded(original, target, edit=None, **table_options):
    """A copy of the model whose variables.index holds the same entries (edited) in snappy-compressed blocks."""
    model_dir = shutil.copytree(original, target)
    entries = read_index(original / "variables" / "variables.index")
    if edit:
        edit(entries)
    (model_dir / "variables" / "variables.index").write_bytes(snappy_table(sorted(entries.items()), **table_options))
    return model_dir


@pytest.fixture(scope="module")
def compressed(original, tmp_path_factory):
    return _reencoded(original, tmp_path_factory.mktemp("compressed") / "model")


def test_tensorflow_reads_the_compressed_index_as_the_original(original, compressed):
    index = compressed / "variables" / "variables.index"
    assert index.read_bytes() != (original / "variables" / "variables.index").read_bytes()
    theirs = tf.train.load_checkpoint(str(original / "variables" / "variables"))
    ours = tf.train.load_checkpoint(str(compressed / "variables" / "variables"))
    assert ours.get_variable_to_shape_map() == theirs.get_variable_to_shape_map()
    for name in theirs.get_variable_to_shape_map():
        np.testing.assert_array_equal(ours.get_tensor(name), theirs.get_tensor(name))


def test_a_compressed_index_passes_inspection(compressed, tmp_path):
    inspection = inspection_job(str(compressed), str(tmp_path))
    assert inspection.model_format == "tf2"
    assert "serving_default" in inspection.meta_graphs[0].signatures


@pytest.mark.usefixtures("prefect_server")
def test_a_model_with_a_compressed_index_loads_and_validates(compressed, tracking_uri, workdir):
    report = run_flow(compressed, tracking_uri, workdir, export_onnx=False, benchmark=False)
    assert report.status == "passed", report.first_error() or report.failed_checks()
    statuses = {check.name: check.status for check in report.checks}
    assert statuses["keras_wrapper_parity"] == statuses["batch_consistency"] == "passed"


def _kernel_entry(entries, change):
    entry = tensor_bundle_pb2.BundleEntryProto.FromString(entries[KERNEL])
    change(entry)
    entries[KERNEL] = entry.SerializeToString()


def _truncated(model_dir):
    index = model_dir / "variables" / "variables.index"
    index.write_bytes(index.read_bytes()[:-20])


def _random(model_dir):
    (model_dir / "variables" / "variables.index").write_bytes(np.random.default_rng(0).bytes(4096))


def _corrupt_block(model_dir):
    index = model_dir / "variables" / "variables.index"
    data = bytearray(index.read_bytes())
    data[3] ^= 0xFF
    index.write_bytes(bytes(data))


CORRUPT = {
    "truncated": (_truncated, "no table footer (truncated or not a checkpoint index)"),
    "random": (_random, "no table footer (truncated or not a checkpoint index)"),
    "corrupt block": (_corrupt_block, "unreadable checkpoint index"),
}


@pytest.mark.parametrize("case", CORRUPT, ids=list(CORRUPT))
def test_a_corrupt_index_is_refused_in_one_line(case, compressed, tmp_path):
    damage, expected = CORRUPT[case]
    model_dir = shutil.copytree(compressed, tmp_path / "model")
    damage(model_dir)
    with pytest.raises(NotASavedModel, match="unreadable checkpoint index") as refused:
        inspection_job(str(model_dir), str(tmp_path))
    assert expected in str(refused.value) and "\n" not in str(refused.value)


def test_an_unknown_block_type_is_refused(original, tmp_path):
    model_dir = _reencoded(original, tmp_path / "model", block_type=2)
    with pytest.raises(NotASavedModel, match="a block of unknown compression type 2"):
        inspection_job(str(model_dir), str(tmp_path))


def test_an_entry_whose_size_disagrees_with_its_dtype_and_shape_is_refused(original, tmp_path):
    def grow(entries):
        _kernel_entry(entries, lambda entry: setattr(entry, "size", entry.size + 4))

    model_dir = _reencoded(original, tmp_path / "model", edit=grow)
    with pytest.raises(NotASavedModel, match=r"variable 'variables/0/.ATTRIBUTES/VARIABLE_VALUE' \(float32 \[20, 32\]\) "
                                             r"needs 2560 bytes, the index gives it 2564"):
        inspection_job(str(model_dir), str(tmp_path))


def _shape_dim(size):
    return lambda entry: entry.shape.dim.add(size=size)


def _slice_twice(entry):
    for _ in range(2):
        entry.slices.add().extent.add(start=0, length=1)


ABORTING = {
    "negative dimension": (_shape_dim(-5), "has an impossible shape"),
    "overflowing shape": (_shape_dim(2**62), "has an impossible shape"),
    "a slice listed twice": (_slice_twice, "lists a slice twice"),
}


@pytest.mark.parametrize("case", ABORTING, ids=list(ABORTING))
def test_an_entry_tensorflow_would_abort_on_is_refused_before_it_reads(case, original, tmp_path):
    # TensorFlow's reader meets such an entry with a failed CHECK: the whole process, this one, would abort.
    change, expected = ABORTING[case]
    model_dir = _reencoded(original, tmp_path / "model", edit=lambda entries: _kernel_entry(entries, change))
    with pytest.raises(NotASavedModel, match=f"variable 'variables/0/.ATTRIBUTES/VARIABLE_VALUE' {expected}"):
        inspection_job(str(model_dir), str(tmp_path))
