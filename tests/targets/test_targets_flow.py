"""Every target through the whole flow on a small CNN, and one target failing by name while the others run;
under a real Prefect server, recorded in a real MLflow store and registry."""

from functools import partial
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from modelgate import targets
from modelgate.execution.quiet import import_tensorflow
from tests.flows import run_flow

tf = import_tensorflow()
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_server")]


class _TwoHeads(tf.Module):
    def __init__(self):
        super().__init__()
        self.kernel = tf.Variable(tf.random.stateless_normal([4, 3], seed=[1, 2]))

    @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="features")])
    def score(self, features):
        return {"score": tf.reduce_sum(features @ self.kernel, axis=1)}

    @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="features")])
    def embed(self, features):
        return {"embedding": tf.nn.relu(features @ self.kernel)}


def two_signatures(directory: Path) -> Path:
    module = _TwoHeads()
    tf.saved_model.save(module, str(directory), signatures={"serving_default": module.score, "embed": module.embed})
    return directory


_run = partial(run_flow, benchmark_batch_sizes=[1, 4], benchmark_max_windows=3, benchmark_warmup=2, baseline=None,
               onnx_batches=3)


def test_every_target_converts_compares_and_benchmarks_the_cnn_and_the_registry_shows_the_matrix(
    onnx_models, tracking_uri, workdir
):
    report = _run(onnx_models["keras_cnn"], tracking_uri, workdir, targets=["all"], register_as="gate-matrix")
    assert report.status == "passed", report.verdict_line()
    assert set(report.targets) == set(targets.registry())
    for name, section in report.targets.items():
        assert section.status == "passed", (name, section.message)
        assert section.conversion.size_bytes > 0 and section.conversion.duration_s > 0
        assert Path(section.conversion.path).exists() and section.conversion.reproduce
        cpu = next(run for key, run in section.comparisons.items() if key.endswith("/cpu"))
        assert cpu.batches == 3 and all(output.passed for output in cpu.outputs.values())
        measured = {(b.runtime, b.batch_size) for b in report.benchmarks if b.target == name}
        assert measured == {(cpu.runtime, 1), (cpu.runtime, 4)}, name
    reduced = report.targets["onnx-int8"].criteria
    assert not reduced.elementwise and reduced.min_cosine_similarity is not None

    client = MlflowClient(tracking_uri)
    run = client.get_run(report.mlflow.run_id)
    assert "p50_ms.litert.litert.cpu.bs4" in run.data.metrics
    assert "p50_ms.savedmodel.tensorflow.cpu.bs4" in run.data.metrics
    assert run.data.tags["modelgate.recommended_format"] in report.targets
    version = client.get_model_version("gate-matrix", report.registry.version)
    assert version.tags["modelgate.recommended_format"] == run.data.tags["modelgate.recommended_format"]
    openvino = report.targets["openvino"]
    assert f"- `openvino` ({openvino.requirement}): **passed**" in version.description
    assert "**Serve `" in version.description or "No format recommended" in version.description
    html = (Path(report.workdir) / "report.html").read_text()
    assert "Format matrix" in html and "onnx-fp16" in html and "data:image/png;base64" in html


@pytest.mark.parametrize("optional, verdict", [([], "failed"), (["openvino"], "passed")])
def test_a_target_that_cannot_convert_fails_by_name_while_the_others_run(
    optional, verdict, tmp_path, tracking_uri, workdir
):
    # OpenVINO's TensorFlow frontend reads only a SavedModel's serving_default signature; this asks for another.
    report = _run(two_signatures(tmp_path / "two"), tracking_uri, workdir, signature="embed",
                  targets=["onnx", "openvino"], optional_targets=optional, benchmark=False)  # verdicts only
    stages = {stage.name: stage.status for stage in report.stages}
    assert stages["export-openvino"] == "failed" and stages["compare-openvino"] == "skipped"
    openvino = report.targets["openvino"]
    assert openvino.status == "failed" and "serving_default" in openvino.message
    check = next(c for c in report.checks if c.name == "openvino_conversion")
    assert check.status == ("warning" if optional else "failed")
    assert report.targets["onnx"].status == "passed" and stages["benchmark-onnx"] == "ok"
    assert report.status == verdict
    if verdict == "failed":
        assert report.verdict_line().startswith("failed: openvino_conversion: openvino conversion failed:")
