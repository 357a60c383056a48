"""A version that passed is signed (OpenSSF model signing) before its alias moves; `modelgate verify` and
model-signing's own command line agree on it, until one byte of it changes."""

import hashlib
import json
import subprocess
import sys
from functools import partial
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from flows.new_versions import validate_new_versions
from modelgate.service import cli
from modelgate.tracking.registry import download_version, registry_client, resolve_version
from modelgate.tracking.signing import ATTESTATION_FILE, SIGNATURE_FILE
from tests.flows import run_flow
from tests.signing_keys import certificate_chain, key_pair
from tests.tracking.test_registry import FAST, _register

pytestmark = pytest.mark.usefixtures("prefect_server")
_validate = partial(run_flow, **FAST)
VARIABLES = "variables/variables.data-00000-of-00001"


def _verify(source: str, public_key: Path, tracking_uri: str) -> int:
    return cli.main(["verify", source, "--public-key", str(public_key), "--tracking-uri", tracking_uri])


def _model_signing_verifies(folder: Path, public_key: Path) -> bool:
    """model-signing's own command line, as a serving pipeline without modelgate would run it."""
    command = [sys.executable, "-m", "model_signing", "verify", "key", str(folder),
               "--signature", str(folder / SIGNATURE_FILE), "--public_key", str(public_key)]
    return subprocess.run(command, capture_output=True, text=True, timeout=300).returncode == 0


def _version_files(tracking_uri: str, uri: str) -> Path:
    """Where the registry keeps the version's files (a local artifact store here): what a serving system reads."""
    client = registry_client(tracking_uri)
    version = resolve_version(client, uri)
    return Path(client.get_model_version_download_uri(version.name, version.version).removeprefix("file://"))


def test_a_registered_version_is_signed_aliased_verified_and_caught_once_a_byte_changes(
    model_dirs, tracking_uri, workdir, signing_keys, capsys
):
    private, public = signing_keys
    report = run_flow(model_dirs["keras_export"], tracking_uri, workdir, register_as="signed-gate",
                      signing_key=str(private), benchmark_batch_sizes=[1], benchmark_max_windows=3)
    assert report.status == "passed", report.verdict_line()
    uri = f"models:/signed-gate/{report.registry.version}"
    assert f"signed {uri} ({SIGNATURE_FILE}, with {ATTESTATION_FILE})" in report.registry.actions
    client = MlflowClient(tracking_uri)
    assert str(client.get_model_version_by_alias("signed-gate", "validated").version) == report.registry.version

    downloaded = download_version(registry_client(tracking_uri), tracking_uri, resolve_version(
        registry_client(tracking_uri), uri), workdir / "downloaded")
    assert {"saved_model.pb", "model.onnx", "MLmodel", SIGNATURE_FILE, ATTESTATION_FILE} <= {
        p.name for p in downloaded.iterdir()}
    statement = json.loads((downloaded / ATTESTATION_FILE).read_text())
    assert statement["_type"] == "https://in-toto.io/Statement/v1" and statement["predicate"]["verdict"] == "passed"
    assert statement["predicate"]["report"]["mlflow_run_id"] == report.mlflow.run_id
    signed_report = downloaded / statement["predicate"]["report"]["name"]
    assert hashlib.sha256(signed_report.read_bytes()).hexdigest() == statement["predicate"]["report"]["digest"]["sha256"]
    assert json.loads(signed_report.read_text())["status"] == "passed"
    assert {"saved_model.pb", "model.onnx", VARIABLES, "assets.extra/tf_serving_warmup_requests", "MLmodel",
            "code/modelgate_pyfunc.py"} <= {subject["name"] for subject in statement["subject"]}  # all of it signed
    assert {c.name: c.status for c in report.checks}["signature_valid"] == "passed"
    assert _model_signing_verifies(downloaded, public)
    capsys.readouterr()
    assert _verify(uri, public, tracking_uri) == 0
    assert "verified: " + uri in capsys.readouterr().out

    stored = _version_files(tracking_uri, uri) / VARIABLES
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 1
    stored.write_bytes(bytes(data))
    assert _verify(uri, public, tracking_uri) == 1
    assert f"changed: {VARIABLES}" in capsys.readouterr().out
    tampered = download_version(registry_client(tracking_uri), tracking_uri, resolve_version(
        registry_client(tracking_uri), uri), workdir / "tampered")
    assert not _model_signing_verifies(tampered, public)
    assert _verify(str(tampered), public, tracking_uri) == 1  # the folder itself, as a serving host holds it

    # The schedule's next tick (nothing new to validate) verifies what it signed: tagged, alias removed.
    rows = validate_new_versions(model_names=["signed-gate"], tracking_uri=tracking_uri, timeout_s=0,
                                 request_fields={"signing_key": str(private)})
    assert rows == []
    version = client.get_model_version("signed-gate", report.registry.version)
    assert version.tags["modelgate.tampered"] == f"changed: {VARIABLES}"
    assert "validated" not in client.get_registered_model("signed-gate").aliases


def test_a_registry_version_is_signed_in_place_in_certificate_mode_and_only_its_chain_verifies_it(
    model_dirs, tracking_uri, workdir, signing_keys, tmp_path, capsys
):
    certificate, root = certificate_chain(tmp_path / "pki", signing_keys[0])
    version = _register(tracking_uri, "signed-in-place", model_dirs["custom_signature"])
    report = _validate(f"models:/signed-in-place/{version}", tracking_uri, workdir, signing_key=str(signing_keys[0]),
                       signing_certificate=str(certificate))
    assert report.status == "passed", report.verdict_line()
    assert {c.name: c.status for c in report.checks}["signature_valid"] == "passed"
    capsys.readouterr()
    assert cli.main(["verify", "models:/signed-in-place@validated", "--certificate-chain", str(root),
                     "--tracking-uri", tracking_uri]) == 0
    files = download_version(registry_client(tracking_uri), tracking_uri, resolve_version(
        registry_client(tracking_uri), f"models:/signed-in-place/{version}"), workdir / "downloaded")
    # beside the training pipeline's own files, in its SavedModel folder: the warm-up requests it passed with
    assert (files / "assets.extra" / "tf_serving_warmup_requests").is_file()
    command = [sys.executable, "-m", "model_signing", "verify", "certificate", str(files), "--signature",
               str(files / SIGNATURE_FILE), "--certificate_chain", str(root)]
    assert subprocess.run(command, capture_output=True, timeout=300).returncode == 0
    _, other_root = certificate_chain(tmp_path / "other-pki", key_pair(tmp_path / "stranger")[0])
    capsys.readouterr()
    assert cli.main(["verify", str(files), "--certificate-chain", str(other_root)]) == 1
    assert "the signature does not verify with" in capsys.readouterr().out


def test_without_a_signing_key_a_passing_version_gets_no_alias(model_dirs, tracking_uri, workdir):
    report = _validate(model_dirs["custom_signature"], tracking_uri, workdir, register_as="unsigned-gate")
    assert report.status == "passed", report.verdict_line()
    assert ("alias 'validated' not set: only a signed version gets it, and no signing key was given"
            in report.registry.actions)
    assert MlflowClient(tracking_uri).get_registered_model("unsigned-gate").aliases == {}


def test_a_key_that_cannot_sign_or_verify_is_a_usage_error_in_one_line(model_dirs, tmp_path, capsys):
    not_a_key = tmp_path / "key.pem"
    not_a_key.write_text("not a key")
    for key in (tmp_path / "missing.pem", not_a_key):
        assert cli.main(["validate", str(model_dirs["custom_signature"]), "--signing-key", str(key),
                         "--register-as", "never-registered", "--output-dir", str(tmp_path / "out")]) == 2
        error = capsys.readouterr().err.strip()
        assert error.startswith(f"modelgate: error: signing key {key}: ") and "\n" not in error
    assert not (tmp_path / "out").exists()  # nothing validated, nothing signed
    assert cli.main(["validate", str(model_dirs["custom_signature"]), "--signing-key", str(key_pair(tmp_path)[0]),
                     "--output-dir", str(tmp_path / "out")]) == 2
    assert "--signing-key signs a registry version" in capsys.readouterr().err
    assert cli.main(["verify", str(tmp_path), "--public-key", str(not_a_key)]) == 2
    assert capsys.readouterr().err.startswith(f"modelgate: error: public key {not_a_key}: not a PEM public key")


def test_a_password_protected_key_signs_with_its_password_from_the_environment(tmp_path, monkeypatch):
    from cryptography.hazmat.primitives import serialization

    from modelgate.tracking import signing
    from tests.target_reports import targets_report

    private, public = key_pair(tmp_path / "plain")
    key = serialization.load_pem_private_key(private.read_bytes(), None)
    locked = tmp_path / "locked.pem"
    locked.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                         serialization.BestAvailableEncryption(b"s3cret")))
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "saved_model.pb").write_bytes(b"graph")
    monkeypatch.setenv(signing.KEY_PASSWORD_VARIABLE, "s3cret")
    signing.sign(folder, locked, targets_report(tmp_path / "report"))
    assert signing.verify(folder, signing.TrustAnchor(public_key=public)).valid
    monkeypatch.setenv(signing.KEY_PASSWORD_VARIABLE, "wrong")
    with pytest.raises(signing.SigningKeyError, match="not a PEM private key this password opens"):
        signing.sign(folder, locked, targets_report(tmp_path / "report"))


def test_a_version_that_no_longer_passes_loses_the_alias_and_the_signed_tag_modelgate_gave_it(tmp_path):
    from modelgate.report import Check
    from modelgate.tracking.registry import ALIAS_TAG, SIGNED_TAG, RegistryVersion, write_back
    from tests.target_reports import targets_report

    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = registry_client(tracking_uri)
    client.create_registered_model("regressed")
    version = RegistryVersion("regressed", str(client.create_model_version("regressed", str(tmp_path)).version))
    report = targets_report(tmp_path / "report", tracking_uri)
    write_back(client, version, report, "validated", None, signed=True)
    assert client.get_model_version(version.name, version.version).tags[SIGNED_TAG] == "true"
    report.checks.append(Check(name="finite_outputs", status="failed", message="NaN in logits"))
    report.status = "failed"
    done = write_back(client, version, report, "validated", None, signed=False)
    assert f"alias 'validated' removed from {version.uri}: it no longer passes" in done
    tags = client.get_model_version(version.name, version.version).tags
    assert SIGNED_TAG not in tags and tags[ALIAS_TAG] == "validated"
    assert client.get_registered_model("regressed").aliases == {}
