import shutil
from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from modelgate.execution.sandbox import reading_limits_of, run_isolated
from modelgate.model.warmup import WARMUP_FILE, warmup_file, write_warmup_job
from modelgate.report import Check, RegistrySection, ValidationReport
from modelgate.request import ValidationRequest
from modelgate.stages import RegistryOutcome, ResolvedSource
from modelgate.tracking import signing
from modelgate.tracking.mlflow_model import write_mlmodel, written_files
from modelgate.tracking.registry import (
    RegistryVersion,
    add_to_version,
    download_version,
    register_files,
    registered_copy,
    registry_client,
    unsign,
    write_back,
)


def add_warmup(saved_model_dir: Path, report: ValidationReport, request: ValidationRequest, model_name: str) -> Path | None:
    """TF Serving's warm-up requests of the inputs the model passed with, in the copy that is registered; a
    SavedModel that ships its own keeps them. Returns the file written, if any."""
    if warmup_file(saved_model_dir) or not (report.inputs and report.inputs.path):
        return None
    written = Path(report.workdir) / "warmup" / WARMUP_FILE.name
    run_isolated(write_warmup_job, report.inputs.path, report.signatures[report.signature], model_name, str(written),
                 limits=reading_limits_of(request), label="publish-registry (warm-up requests)",
                 log_path=Path(report.workdir) / "publish-registry.log")
    destination = saved_model_dir / WARMUP_FILE
    destination.parent.mkdir(exist_ok=True)
    return Path(shutil.copy2(written, destination))


def has_signature(report: ValidationReport) -> bool:
    """Whether the validation got as far as a signature, which a version's MLmodel describes."""
    return report.signature in report.signatures


@task(name="publish-registry", cache_policy=NO_CACHE)
def publish_registry(
    report: ValidationReport, source: ResolvedSource, request: ValidationRequest, flow_run_url: str | None
) -> RegistryOutcome:
    """Write the verdict to the registry version validated, or register a path source first (register_as).
    A registered copy is an MLflow model (its MLmodel: the signature's schema, a pyfunc flavor that runs it, the
    targets' flavors), as is a version of plain files that passed. A version that passed gets TF Serving's warm-up
    requests and, with a signing key, is signed; only a version whose stored files verify against that signature
    gets the alias."""
    client = registry_client(report.mlflow.tracking_uri)
    workdir = Path(report.workdir)
    passed = report.status == "passed"
    sign = passed and bool(request.mlflow.signing_key)
    actions, checks = [], []
    # flows/validate.py runs this stage only for a registry source or with register_as.
    if source.registry_name:
        version = RegistryVersion(source.registry_name, source.registry_version)
        folder = Path(source.version_files)
        added = []
        # A version logged as a Keras flavor holds no SavedModel for TF Serving to warm up.
        if passed and not source.keras_file and (warmup := add_warmup(Path(source.model_dir), report, request, version.name)):
            added.append(warmup)
        if (passed and not source.keras_file and has_signature(report)
                and not any(path.exists() for path in written_files(folder))
                and Path(source.model_dir).resolve().is_relative_to(folder.resolve())):
            # A version of plain files becomes an MLflow model too; one with an MLmodel (or an environment file)
            # of its own keeps its files as they are.
            added += write_mlmodel(folder, report, Path(source.model_dir))
        signature_files = []
        if sign:
            # The copy that was validated is what gets signed; the signature and attestation join the version.
            signature_files = signing.sign(folder, request.mlflow.signing_key, report, request.mlflow.signing_certificate)
            added += signature_files
        if added:
            unsign(client, version, keep_alias=True)  # no re-verification between these uploads
        for path in added:
            add_to_version(client, version, path, path.parent.relative_to(folder))
            if path in signature_files:
                client.log_artifact(report.mlflow.run_id, str(path), "signature")
    else:
        folder = registered_copy(Path(source.model_dir), report.targets, workdir / "registered_model")
        if passed:
            add_warmup(folder, report, request, request.mlflow.register_as)
        if has_signature(report):
            write_mlmodel(folder, report, folder, report.targets)  # before signing: the MLmodel is signed too
        if sign:
            signing.sign(folder, request.mlflow.signing_key, report, request.mlflow.signing_certificate)
        version = register_files(client, report.mlflow.run_id, folder, request.mlflow.register_as)
        actions.append(f"registered {version.uri}")
    if sign:
        # What the registry now holds, downloaded and verified: the alias depends on it.
        stored = download_version(client, report.mlflow.tracking_uri, version, workdir / "published")
        anchor = signing.signer_anchor(request.mlflow.signing_key, request.mlflow.signing_certificate, workdir)
        result = signing.verify(stored, anchor)
        checks.append(Check(name="signature_valid", status="passed" if result.valid else "failed", message=(
            f"{version.uri} as stored verifies against its signature ({signing.SIGNATURE_FILE}, OpenSSF model "
            "signing)" if result.valid else f"{version.uri} as stored does not verify: {'; '.join(result.lines())}")))
        sign = result.valid
        actions.append(f"signed {version.uri} ({signing.SIGNATURE_FILE}, with {signing.ATTESTATION_FILE})")
    elif request.mlflow.alias and passed:
        actions.append(f"alias '{request.mlflow.alias}' not set: only a signed version gets it, and no signing key was given")
    # The registry gets the verdict as it will stand, signature_valid included.
    judged = report.model_copy(update={"checks": [*report.checks, *checks]})
    judged.conclude()
    actions += write_back(client, version, judged, request.mlflow.alias, flow_run_url, signed=sign)
    return RegistryOutcome(section=RegistrySection(name=version.name, version=version.version, actions=actions),
                           checks=checks)
