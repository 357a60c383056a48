"""The validation flow's own process never imports TensorFlow (nor Keras, nor tf2onnx): importing it costs
seconds and hundreds of MB, and everything that needs it, the static inspection included, runs in child processes.
Checked on real validations in a fresh interpreter, the way a CLI run or a Prefect flow run starts."""

import json
import os
import subprocess
import sys

import pytest

from modelgate.service.prefect_server import STARTUP_TIMEOUT_SETTING

pytestmark = pytest.mark.slow  # two whole validations in a fresh interpreter, its own Prefect server included

FRAMEWORKS = ("tensorflow", "keras", "tf2onnx")

VALIDATE = f"""
import json, sys
from flows.validate import validate
from modelgate.request import ValidationRequest
reports = [validate(ValidationRequest(**fields)) for fields in json.loads(sys.argv[1])]
print(json.dumps({{
    "verdicts": [report.verdict_line() for report in reports],
    "imported": [name for name in {FRAMEWORKS!r} if name in sys.modules],
}}))
"""


def test_a_validation_never_imports_tensorflow_in_the_flow_s_process(zoo, tmp_path):
    common = {"tracking_uri": f"sqlite:///{tmp_path}/mlflow.db", "output_dir": str(tmp_path / "out")}
    requests = [
        # Default settings: the ONNX target, benchmarks, MLflow logging.
        {"source": str(zoo["keras_export"]), "report_path": str(tmp_path / "keras.json"), **common},
        # A TF1 graph fed tf.Example records, synthesized from its parse spec (tf2onnx cannot convert its parser).
        {"source": str(zoo["estimator_classify"]), "report_path": str(tmp_path / "estimator.json"),
         "export_onnx": False, "benchmark": False, **common},
    ]
    env = {key: value for key, value in os.environ.items() if key != "PREFECT_API_URL"}
    env[STARTUP_TIMEOUT_SETTING] = "180"  # Prefect's own default is short for a loaded machine
    result = subprocess.run([sys.executable, "-c", VALIDATE, json.dumps(requests)], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stderr[-3000:]
    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert found["verdicts"] == ["passed", "passed"], found
    assert found["imported"] == [], found
