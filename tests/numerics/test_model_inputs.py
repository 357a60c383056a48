"""Inputs real models take, synthesized from what their graphs say: integer ids drawn from the rows of the
tables they index, text with words in and out of the model's vocabulary, tf.Example records built from the
graph's own parse spec. Most of it through the inspect/select/prepare-inputs tasks and the model jobs;
the verdicts users see through the whole flow."""

import tempfile
from functools import partial
from pathlib import Path

import numpy as np
import pytest
from google.protobuf import text_format
from pydantic import ValidationError

from modelgate.errors import InputsError
from modelgate.execution.jobs import inspection_job, output_checks_job, wrapper_parity_job
from modelgate.execution.quiet import import_tensorflow
from modelgate.numerics.inputs import example_message_class, read_npz
from modelgate.request import ValidationRequest
from modelgate.service.cli import _parser, _request_fields
from tasks.prepare_inputs import prepare_inputs
from tasks.select_signature import select_signature
from tests.flows import run_flow
from tests.models import FRUITS, TAGS, TEXT_VOCABULARY, example_record

tf = import_tensorflow()

MODEL_CHECKS = (
    "keras_wrapper_built", "keras_wrapper_parity", "output_names", "output_dtypes", "output_shapes",
    "finite_outputs", "deterministic", "batch_consistency",
)


def _choice(model_dir, key=None):
    return select_signature.fn(inspection_job(str(model_dir), tempfile.mkdtemp(dir=Path(model_dir).parent)), key, None)


def _prepare(choice, workdir, **fields):
    return prepare_inputs.fn(choice, ValidationRequest(source="model", **fields), str(workdir))


def _model_checks(choice, inputs, workdir) -> dict[str, str]:
    """The named checks of load-and-wrap and run-checks, from their jobs, run here on the prepared inputs."""
    model = (choice.model_dir, choice.tags, choice.model_format, choice.signature)
    found = wrapper_parity_job(*model, inputs.path, choice.rtol)
    found += output_checks_job(*model, inputs.path,
                               str(workdir / "outputs.npz"), choice.atol, choice.rtol)
    return {check.name: check.status for check in found}


def _ranges(inputs) -> dict[str, tuple]:
    return {name: (r.low, r.high, r.origin) for name, r in inputs.section.value_ranges.items()}


def test_bert_ids_are_drawn_from_the_rows_of_the_tables_they_index(zoo, tmp_path):
    choice = _choice(zoo["bert_backbone"])
    facts = choice.signature.input_facts
    assert facts["token_ids"].value_range == [0, 99]
    assert "'token_embedding/embeddings" in facts["token_ids"].range_detail
    assert "(100 rows)" in facts["token_ids"].range_detail
    assert facts["segment_ids"].value_range == [0, 1] and "segment_embedding" in facts["segment_ids"].range_detail
    assert "padding_mask" not in facts  # reaches no table: the [0, 1] default, which a mask takes too
    inputs = _prepare(choice, tmp_path)
    assert _ranges(inputs) == {
        "token_ids": (0, 99, "graph"), "segment_ids": (0, 1, "graph"), "padding_mask": (0, 1, "default")
    }
    feeds = read_npz(inputs.path)
    assert 1 < feeds["token_ids"].max() <= 99 and feeds["token_ids"].min() >= 0
    assert set(np.unique(feeds["segment_ids"])) == set(np.unique(feeds["padding_mask"])) == {0, 1}


def test_a_tf1_item_id_takes_the_rows_of_its_reference_variable(zoo, tmp_path):
    choice = _choice(zoo["tf1_item_ids"])
    facts = choice.signature.input_facts["item_ids"]
    assert facts.value_range == [0, 4] and facts.range_detail == "indexes 'items' (5 rows)"
    inputs = _prepare(choice, tmp_path, batch_size=16)
    assert set(np.unique(read_npz(inputs.path)["item_ids"])) == set(range(5))
    assert _model_checks(choice, inputs, tmp_path) == dict.fromkeys(MODEL_CHECKS, "passed")


def test_a_named_range_wins_over_the_graph_which_wins_over_the_default_key(zoo, tmp_path):
    choice = _choice(zoo["bert_backbone"])
    inputs = _prepare(choice, tmp_path, value_range={"token_ids": [5, 9], "": [1, 1]})
    assert _ranges(inputs) == {
        "token_ids": (5, 9, "user"), "segment_ids": (0, 1, "graph"), "padding_mask": (1, 1, "user")
    }
    feeds = read_npz(inputs.path)
    assert feeds["token_ids"].min() >= 5 and feeds["token_ids"].max() <= 9
    assert (feeds["padding_mask"] == 1).all()
    with pytest.raises(InputsError, match="value_range names masks, which signature 'serving_default' has no "
                                          "numeric input or tf.Example feature of; it has padding_mask, "
                                          "segment_ids, token_ids"):
        _prepare(choice, tmp_path, value_range={"masks": [0, 1]})
    with pytest.raises(ValidationError, match="the range of 'ids' must be \\[low, high\\] with low <= high"):
        ValidationRequest(source="model", value_range={"ids": [3, 1]})


def test_value_range_options_become_the_request_field():
    args = _parser().parse_args(["validate", "m", "--value-range", "token_ids=0:999", "--value-range", "0:1"])
    assert _request_fields(args, "m")["inputs"]["value_range"] == {"token_ids": [0, 999], "": [0, 1]}
    with pytest.raises(ValueError, match="--value-range expects NAME=LO:HI or LO:HI, found 'token_ids=0-9'"):
        _request_fields(_parser().parse_args(["validate", "m", "--value-range", "token_ids=0-9"]), "m")


def test_float_inputs_stay_standard_normal_unless_a_range_is_given(model_dirs, tmp_path):
    choice = _choice(model_dirs["keras_export"])
    assert _prepare(choice, tmp_path).section.value_ranges == {}
    assert read_npz(_prepare(choice, tmp_path).path)["features"].min() < 0
    ranged = _prepare(choice, tmp_path, value_range={"features": [2, 3]})
    values = read_npz(ranged.path)["features"]
    assert values.min() >= 2 and values.max() <= 3 and _ranges(ranged)["features"] == (2, 3, "user")


def test_an_lstm_over_sequences_of_any_length_gets_ids_its_embedding_has(zoo, tmp_path):
    choice = _choice(zoo["lstm_sequences"])
    assert choice.signature.inputs["ids"].shape == [None, None]
    inputs = _prepare(choice, tmp_path, unknown_dim_size=5)
    assert _ranges(inputs) == {"ids": (0, 29, "graph")}
    ids = read_npz(inputs.path)["ids"]
    assert ids.shape == (4, 5) and (ids == 0).any() and ids.max() > 1  # padding and real tokens
    assert _model_checks(choice, inputs, tmp_path) == dict.fromkeys(MODEL_CHECKS, "passed")


def _words(samples: list[str]) -> set[str]:
    return {word for text in samples for word in text.split()}


def test_a_text_classifier_gets_words_in_and_out_of_its_vocabulary(zoo, tmp_path):
    choice = _choice(zoo["text_classifier"])
    assert set(choice.signature.input_facts["text"].vocabulary) == set(TEXT_VOCABULARY)
    inputs = _prepare(choice, tmp_path)
    words = _words(inputs.section.samples["text"])
    assert words & set(TEXT_VOCABULARY) and words - set(TEXT_VOCABULARY)
    assert inputs.section.shapes == {"text": [4, 1]} and inputs.section.dtypes == {"text": "string"}
    assert _model_checks(choice, inputs, tmp_path) == dict.fromkeys(MODEL_CHECKS, "passed")


def test_a_vocabulary_table_reads_its_asset_file_and_sees_known_and_unknown_words(zoo, tmp_path):
    choice = _choice(zoo["vocabulary_table"])
    assert choice.signature.input_facts["words"].vocabulary == FRUITS
    inputs = _prepare(choice, tmp_path)
    assert _model_checks(choice, inputs, tmp_path) == dict.fromkeys(MODEL_CHECKS, "passed")
    known = read_npz(tmp_path / "outputs.npz")["known"]
    assert known.any() and not known.all()


def test_an_estimator_classify_signature_gets_examples_from_its_parse_spec(zoo, tmp_path):
    choice = _choice(zoo["estimator_classify"])
    assert choice.signature.method_name == "tensorflow/serving/classify"
    facts = choice.signature.input_facts["inputs"]
    assert facts.parsed_by == "ParseExample"
    assert [(f.key, f.kind, f.dtype, f.shape) for f in facts.example_features] == [
        ("x", "dense", "float32", [2]), ("bucket", "dense", "int64", [1]), ("tags", "sparse", "string", []),
    ]
    inputs = _prepare(choice, tmp_path, value_range={"bucket": [2, 2]})
    assert inputs.section.example_features["inputs"] == facts.example_features
    assert 'key: "tags"' in inputs.section.samples["inputs"][0]
    assert _ranges(inputs) == {"bucket": (2, 2, "user")}
    parsed = tf.io.parse_example(read_npz(inputs.path)["inputs"], {
        "x": tf.io.FixedLenFeature([2], tf.float32), "bucket": tf.io.FixedLenFeature([1], tf.int64),
        "tags": tf.io.VarLenFeature(tf.string),
    })
    assert parsed["x"].shape == (4, 2) and (parsed["bucket"].numpy() == 2).all()
    tags = {tag.decode() for tag in parsed["tags"].values.numpy()}
    assert tags & set(TAGS) and tags - set(TAGS)
    assert _model_checks(choice, inputs, tmp_path) == dict.fromkeys(MODEL_CHECKS, "passed")


def test_examples_are_built_without_tensorflow_as_tensorflow_builds_them():
    ours, theirs = example_message_class()(), tf.train.Example()
    for example in (ours, theirs):
        features = example.features.feature
        features["words"].bytes_list.value.extend([b"ab", b"c\x00"])
        features["x"].float_list.value.extend([1.5, -2.0])
        features["ids"].int64_list.value.extend([3, -4, 2**40])
    assert ours.SerializeToString() == theirs.SerializeToString()
    assert text_format.MessageToString(ours) == text_format.MessageToString(theirs)


def test_tf1_classify_and_regress_signatures_read_their_parse_example_v2_spec(model_dirs, tmp_path):
    for key in ("classify", "regress"):
        facts = _choice(model_dirs["tf1_graph"], key).signature.input_facts["inputs"]
        assert facts.parsed_by == "ParseExampleV2"
        assert [(f.key, f.kind, f.dtype, f.shape) for f in facts.example_features] == [("f", "dense", "float32", [3])]


def test_an_examples_file_still_overrides_the_synthesis(zoo, tmp_path):
    path = tmp_path / "examples.tfrecord"
    with tf.io.TFRecordWriter(str(path)) as writer:
        writer.write(example_record([1.0, 2.0, 3.0]))
    choice = _choice(zoo["estimator_classify"])
    inputs = _prepare(choice, tmp_path, inputs_path=str(path))
    assert inputs.section.source == "file" and inputs.section.example_features == {}
    assert read_npz(inputs.path)["inputs"].tolist() == [example_record([1.0, 2.0, 3.0])]
    # Read in a child process, where TensorFlow's reader is: what it refuses is still an InputsError.
    not_records = tmp_path / "examples.txt"
    not_records.write_text("one example per line\n")
    with pytest.raises(InputsError, match="inputs file .*examples.txt: expected a .npz archive or a TFRecord file"):
        _prepare(choice, tmp_path, inputs_path=str(not_records))


@pytest.mark.usefixtures("prefect_server")
class TestVerdicts:
    _run = staticmethod(partial(run_flow, benchmark=False))

    @pytest.fixture(scope="class")
    def bert_report(self, zoo, tracking_uri, prefect_server, tmp_path_factory):
        """The BERT backbone with default settings (ONNX export and comparison included), without benchmarks."""
        return self._run(zoo["bert_backbone"], tracking_uri, tmp_path_factory.mktemp("bert"))

    def test_bert_runs_every_check_on_ids_its_tables_have_and_converts_to_onnx(self, bert_report):
        stages = {stage.name: stage.status for stage in bert_report.stages}
        assert stages["prepare-inputs"] == stages["run-checks"] == stages["compare-onnx"] == "ok", stages
        checks = {check.name: check.status for check in bert_report.checks}
        assert all(checks[name] == "passed" for name in MODEL_CHECKS if name != "keras_wrapper_parity"), checks
        assert bert_report.inputs.value_ranges["token_ids"].origin == "graph"
        onnx = bert_report.targets["onnx"]
        assert onnx.status == "passed"
        assert onnx.comparisons["onnxruntime/cpu"].outputs["sequence_output"].max_abs_diff < 1e-4

    def test_bert_passes(self, bert_report):
        assert bert_report.status == "passed", bert_report.failed_checks()
        parity = next(c for c in bert_report.checks if c.name == "keras_wrapper_parity")
        assert parity.status == "passed"
        # model.predict retraces at the batch's shapes, where grappler may round the last bits otherwise: said.
        assert "bit for bit" in parity.message

    def test_an_estimator_classify_model_passes_without_user_data(self, zoo, tracking_uri, workdir):
        report = self._run(zoo["estimator_classify"], tracking_uri, workdir, export_onnx=False)
        assert report.status == "passed", report.first_error() or report.failed_checks()
        assert report.signature == "serving_default" and report.inputs.source == "synthetic"
        checks = {check.name: check.status for check in report.checks}
        assert all(checks[name] == "passed" for name in MODEL_CHECKS), checks
        assert [f.key for f in report.inputs.example_features["inputs"]] == ["x", "bucket", "tags"]
        assert report.inputs.value_ranges["bucket"].origin == "default"
