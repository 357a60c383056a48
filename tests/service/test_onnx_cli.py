"""The comparison and ONNX options of the command line, as far as the request they build."""

import pytest
from pydantic import ValidationError

from modelgate.request import ValidationRequest
from modelgate.service.cli import _parser, _request_fields
from modelgate.targets import target


def _request(*options) -> ValidationRequest:
    return ValidationRequest(**_request_fields(_parser().parse_args(["validate", "m", *options]), "m"))


def _onnx(request: ValidationRequest):
    return request.requirement_of("onnx"), request.options_of(target("onnx")).external_data


def test_onnx_defaults_are_required_auto_external_data_and_eight_batches():
    request = _request()
    assert (*_onnx(request), request.checks.comparison_batches) == ("required", "auto", 8)
    assert (request.atol, request.rtol) == ({}, {})  # by the graph's precision


def test_onnx_options_build_the_request():
    request = _request("--optional-target", "onnx", "--onnx-external-data", "always", "--comparison-batches", "3",
                       "--atol", "1e-5", "--output-atol", "logits=0.01", "--output-rtol", "probabilities=0")
    assert (*_onnx(request), request.checks.comparison_batches) == ("optional", "always", 3)
    assert request.atol == {"": 1e-5, "logits": 0.01}
    assert request.rtol == {"probabilities": 0.0}  # the other outputs: by the graph's precision


def test_a_malformed_per_output_tolerance_is_refused_in_one_line():
    with pytest.raises(ValueError, match="--output-atol expects NAME=NUMBER, found 'logits'"):
        _request("--output-atol", "logits")
    with pytest.raises(ValidationError, match="tolerances must not be negative"):
        ValidationRequest(source="m", rtol={"logits": -1.0})
