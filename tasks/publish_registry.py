from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from modelgate import signing
from modelgate.registry import (
    RegistryVersion,
    add_to_version,
    register_files,
    registered_copy,
    registry_client,
    write_back,
)
from modelgate.schemas import RegistryOutcome, RegistrySection, ResolvedSource, ValidationReport, ValidationRequest


@task(name="publish-registry", cache_policy=NO_CACHE)
def publish_registry(
    report: ValidationReport, source: ResolvedSource, request: ValidationRequest, flow_run_url: str | None
) -> RegistryOutcome:
    """Write the verdict to the registry version validated, or register a path source first (register_as).
    A version that passed is signed when a signing key is given, and only a signed version gets the alias."""
    client = registry_client(report.mlflow.tracking_uri)
    workdir = Path(report.workdir)
    sign = report.status == "passed" and bool(request.signing_key)
    actions = []
    # flows/validate.py runs this stage only for a registry source or with register_as.
    if source.registry_name:
        version = RegistryVersion(source.registry_name, source.registry_version)
        if sign:
            # The copy that was validated is what gets signed; the signature and attestation join the version.
            folder = Path(source.version_files)
            signature = signing.sign(folder, request.signing_key, report, workdir / "report.json")
            add_to_version(client, version, [folder / signing.ATTESTATION_FILE, signature])
            for path in (folder / signing.ATTESTATION_FILE, signature):
                client.log_artifact(report.mlflow.run_id, str(path), "signature")
    else:
        folder = registered_copy(Path(source.model_dir), report.onnx.path, workdir / "registered_model")
        if sign:
            signing.sign(folder, request.signing_key, report, workdir / "report.json")
        version = register_files(client, report.mlflow.run_id, folder, request.register_as)
        actions.append(f"registered {version.uri}")
    if sign:
        actions.append(f"signed {version.uri} ({signing.SIGNATURE_FILE}, with {signing.ATTESTATION_FILE})")
    elif request.alias and report.status == "passed":
        actions.append(f"alias '{request.alias}' not set: only a signed version gets it, and no signing key was given")
    actions += write_back(client, version, report, request.alias, flow_run_url, signed=sign)
    return RegistryOutcome(section=RegistrySection(name=version.name, version=version.version, actions=actions))
