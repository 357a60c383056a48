"""What Prefect's runs list shows of a validation: the flow run's name and the model's tag, from the request."""

import pytest

from flows.validate import validated_model, validation_name
from modelgate.request import ValidationRequest


@pytest.mark.parametrize(("source", "model", "name"), [
    ("models:/fraud/3", {}, "fraud@3"),
    ("models:/fraud@champion", {}, "fraud@champion"),
    ("/models/resnet", {}, "resnet"),
    ("/models/resnet/", {"signature": "classify"}, "resnet (classify)"),
    ("/serving/resnet", {"version": "7"}, "resnet@7"),
    ("models:/fraud/3", {"signature": "score"}, "fraud@3 (score)"),
])
def test_a_run_is_named_after_what_it_validates(source, model, name):
    assert validation_name(ValidationRequest(source=source, model=model)) == name


def test_an_alias_takes_the_version_it_resolved_to_and_the_tag_names_the_model():
    request = ValidationRequest(source="models:/fraud@champion")
    assert validation_name(request, version="12") == "fraud@12"
    assert validated_model(request) == ("fraud", "champion")
    assert validated_model(ValidationRequest(source="relative/folder"))[0] == "folder"
