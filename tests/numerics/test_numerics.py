"""Numerics a gate must judge like an engineer: reduced-precision models at their precision's tolerances,
long reductions against their outputs' scale."""

import tempfile
from functools import partial

import pytest

from modelgate.execution.jobs import inspection_job, output_checks_job
from modelgate.numerics.precision import DEFAULT_TOLERANCES
from modelgate.request import ValidationRequest
from tasks.prepare_inputs import prepare_inputs
from tasks.select_signature import select_signature
from tests import numerics_models
from tests.flows import run_flow

pytestmark = pytest.mark.usefixtures("prefect_server")
_run = partial(run_flow, benchmark=False)


@pytest.fixture(scope="module")
def mixed_precision(tmp_path_factory):
    return numerics_models.mixed_precision_cnn(tmp_path_factory.mktemp("numerics") / "mixed_precision")


@pytest.mark.slow
def test_a_mixed_float16_model_is_judged_at_float16_tolerances(mixed_precision, tracking_uri, workdir):
    report = _run(mixed_precision, tracking_uri, workdir)
    assert report.status == "passed", report.verdict_line()
    note = next(c for c in report.checks if c.name == "tolerances")
    assert note.severity == "info" and "computes in float16" in note.message
    onnx = report.targets["onnx"]
    assert onnx.status == "passed" and onnx.criteria.atol == {"": 1e-2} and onnx.criteria.rtol == {"": 1e-2}
    probabilities = onnx.comparisons["onnxruntime/cpu"].outputs["probabilities"]
    assert probabilities.passed and probabilities.cosine_similarity > 0.9999
    # float16 arithmetic moves outputs past float32's default atol: those defaults would judge its resolution.
    assert probabilities.max_abs_diff > DEFAULT_TOLERANCES["float32"][0]


def test_explicit_tolerances_win_over_the_precision_defaults(mixed_precision):
    inspection = inspection_job(str(mixed_precision), tempfile.mkdtemp(dir=mixed_precision.parent))
    choice = select_signature.fn(inspection, None, None, 1e-5, {"probabilities": 0.5})
    assert choice.atol == 1e-5 and choice.rtol == {"": 1e-2, "probabilities": 0.5}
    assert "atol as the request sets" in next(c for c in choice.checks if c.name == "tolerances").message


def test_a_long_reduction_keeps_batch_consistency_against_its_scale(tmp_path):
    model_dir = numerics_models.long_reduction(tmp_path / "long_reduction")
    choice = select_signature.fn(inspection_job(str(model_dir), str(tmp_path)), None, None)
    request = ValidationRequest(source=str(model_dir))
    inputs = prepare_inputs.fn(choice, request, str(tmp_path))
    checks = output_checks_job(str(model_dir), choice.tags, choice.model_format, choice.signature, inputs.path,
                               str(tmp_path / "outputs.npz"), choice.atol, choice.rtol)
    consistency = next(c for c in checks if c.name == "batch_consistency")
    assert consistency.status == "passed", consistency.message
    assert "'scores' differs by at most" in consistency.message and "of its largest magnitude" in consistency.message
