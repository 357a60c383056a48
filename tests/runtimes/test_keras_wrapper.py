"""The Keras 3 wrapper: works where keras.layers.TFSMLayer does not, and matches the raw signature exactly."""

import numpy as np
import pytest

from modelgate.execution.jobs import inspection_job
from modelgate.execution.quiet import import_tensorflow
from modelgate.request import ValidationRequest
from modelgate.runtimes.keras_wrapper import KerasModelRunner
from modelgate.runtimes.tensorflow import TFSignatureRunner
from tasks.load_and_wrap import load_and_wrap
from tasks.prepare_inputs import prepare_inputs
from tasks.select_signature import select_signature

FEEDS = {
    "input1": np.random.default_rng(0).standard_normal((3, 4)).astype("float32"),
    "input2": np.random.default_rng(1).standard_normal((3, 1)).astype("float32"),
}


def test_tfsmlayer_alone_fails_on_two_inputs(model_dirs):
    """Why the wrapper exists: if this starts passing, TFSMLayer has been fixed upstream."""
    import keras

    import_tensorflow()
    layer = keras.layers.TFSMLayer(str(model_dirs["custom_signature"]), call_endpoint="my_custom_signature")
    with pytest.raises(Exception, match="positional"):
        layer(FEEDS)


def test_keras_model_predict_with_named_inputs_equals_the_raw_signature(model_dirs, tmp_path):
    choice = select_signature.fn(inspection_job(str(model_dirs["custom_signature"]), str(tmp_path)), None, None)
    raw = TFSignatureRunner(choice.model_dir, choice.tags, choice.signature.key)
    wrapped = KerasModelRunner(raw, choice.signature).activate()
    assert [layer.name for layer in wrapped.model.inputs] == ["input1", "input2"]
    expected, found = raw(FEEDS), wrapped(FEEDS)
    assert set(found) == {"output", "auxiliary_output"}
    for name in expected:
        assert np.array_equal(expected[name], found[name])


def test_load_and_wrap_task_proves_parity_in_a_child_process(model_dirs, tmp_path):
    request = ValidationRequest(source=str(model_dirs["custom_signature"]))
    choice = select_signature.fn(inspection_job(request.source, str(tmp_path)), None, None)
    inputs = prepare_inputs.fn(choice, request, str(tmp_path))
    result = load_and_wrap.fn(choice, inputs, request, str(tmp_path))
    statuses = {check.name: check.status for check in result.checks}
    assert statuses == {"keras_wrapper_built": "passed", "keras_wrapper_parity": "passed"}
    assert (tmp_path / "load-and-wrap.log").exists()
