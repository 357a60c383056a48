"""The MLflow model registry side: models:/ sources in, verdicts out (tags, description, alias).

A training pipeline makes its SavedModel findable by logging the SavedModel directory as run artifacts
and registering that folder as a model version (mlflow.register_model with a runs:/ URI wants an MLflow
logged model, so plain files go through the client):

    with mlflow.start_run() as run:
        mlflow.log_artifacts(saved_model_dir, artifact_path="saved_model")
    client = MlflowClient()
    client.create_registered_model("my-model")          # once
    client.create_model_version("my-model", f"{run.info.artifact_uri}/saved_model", run_id=run.info.run_id)

A model logged with `mlflow.tensorflow.log_model(model, name=..., registered_model_name=...)` works as it is:
modelgate reads the version's MLmodel and derives the SavedModel from its Keras file (modelgate.model.flavors).
Otherwise modelgate validates the shallowest folder of the version's files holding saved_model.pb, so a
version whose files hold the SavedModel one or two folders down works too.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from modelgate.errors import ModelgateError
from modelgate.model.model_source import holds_saved_model
from modelgate.report import DerivedFrom, TargetSection, ValidationReport
from modelgate.reporting import matrix
from modelgate.runtimes import CPU, reference_runtimes
from modelgate.targets import registry as target_registry
from modelgate.tracking.store_template import prepare_store

if TYPE_CHECKING:
    from modelgate.tracking.signing import TrustAnchor

MODELS_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:/(?P<version>\d+)|@(?P<alias>[\w-]+))/?$")
TAG_PREFIX = "modelgate."
SEARCH_DEPTH = 3


class RegistryError(ModelgateError):
    pass


def registry_client(tracking_uri: str) -> MlflowClient:
    """A client whose model registry is the tracking store itself, as modelgate always uses them (a new SQLite
    store starts as a copy of one migrated once: modelgate.tracking.store_template)."""
    prepare_store(tracking_uri)
    return MlflowClient(tracking_uri, registry_uri=tracking_uri)


def validator_version() -> str:
    return metadata.version("modelgate")


@dataclass(frozen=True)
class RegistryVersion:
    name: str
    version: str

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


def is_registry_uri(source: str) -> bool:
    return source.startswith("models:/")


def resolve_version(client: MlflowClient, uri: str) -> RegistryVersion:
    match = MODELS_URI.match(uri)
    if not match:
        raise RegistryError(f"{uri}: not a registry URI of the form models:/NAME/VERSION or models:/NAME@ALIAS")
    name, version, alias = match["name"], match["version"], match["alias"]
    try:
        if alias:
            return RegistryVersion(name, str(client.get_model_version_by_alias(name, alias).version))
        client.get_model_version(name, version)
    except MlflowException as exc:
        raise RegistryError(f"{uri}: {exc.message.splitlines()[0]}") from None
    return RegistryVersion(name, version)


def find_saved_model_dir(root: Path) -> Path:
    """The shallowest folder under root that holds saved_model.pb or saved_model.pbtxt."""
    for depth in range(SEARCH_DEPTH + 1):
        pattern = "/".join(["*"] * depth + ["saved_model.*pb*"])
        # holds_saved_model refuses a chunked SavedModel (saved_model.cpb) by name, saying what to do.
        found = sorted(p.parent for p in root.glob(pattern) if holds_saved_model(p.parent))
        if found:
            return found[0]
    raise RegistryError(
        f"{root}: the model version's files hold no saved_model.pb within {SEARCH_DEPTH} folders and no Keras "
        "flavor (MLmodel); register the SavedModel directory itself, or log the model with mlflow.tensorflow.log_model"
    )


def download_version(client: MlflowClient, tracking_uri: str, version: RegistryVersion, destination: Path) -> Path:
    """The version's files, downloaded under destination (see modelgate.model.flavors.version_model for what they hold)."""
    import mlflow.artifacts

    destination.mkdir(parents=True, exist_ok=True)
    return Path(mlflow.artifacts.download_artifacts(
        artifact_uri=client.get_model_version_download_uri(version.name, version.version),
        dst_path=str(destination), tracking_uri=tracking_uri,
    ))


def registered_files(targets: Mapping[str, TargetSection]) -> list[Path]:
    """The files of the targets' artifacts that go into a registered version, as each target's module says
    (its registered_files: ONNX's model.onnx); a target without that hook, or without an artifact, adds none."""
    files = []
    for name, section in targets.items():
        declared = target_registry().get(name)
        if declared is not None and section.conversion is not None and section.conversion.path:
            files += [path for path in declared.registered_files(section.conversion.path) if path.is_file()]
    return files


def registered_copy(saved_model_dir: Path, targets: Mapping[str, TargetSection], destination: Path) -> Path:
    """The folder a path source is registered as: the SavedModel at its root, so that a TF Serving version folder
    can be this folder as it is, with the targets' registered files beside it (registered_files), then its MLmodel
    (modelgate.tracking.mlflow_model.write_mlmodel) and, once signed, the attestation and signature."""
    shutil.copytree(saved_model_dir, destination)
    for path in registered_files(targets):
        shutil.copy2(path, destination / path.name)
    return destination


def register_files(client: MlflowClient, run_id: str, folder: Path, name: str) -> RegistryVersion:
    """Log the registered copy to the validation's run and register it."""
    client.log_artifacts(run_id, str(folder), "registered_model")
    try:
        client.create_registered_model(name)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    artifact_uri = client.get_run(run_id).info.artifact_uri
    created = client.create_model_version(name, f"{artifact_uri}/registered_model", run_id=run_id)
    return RegistryVersion(name, str(created.version))


def add_to_version(client: MlflowClient, version: RegistryVersion, path: Path, folder: Path) -> None:
    """A file written among a version's own (its signature, its warm-up requests) where its artifacts are
    stored, in folder (relative to the version's root)."""
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    repository = get_artifact_repository(client.get_model_version_download_uri(version.name, version.version),
                                         tracking_uri=client.tracking_uri)
    repository.log_artifact(str(path), None if str(folder) == "." else str(folder))


def key_figures(report: ValidationReport) -> dict[str, str]:
    """The SavedModel's p50 on its reference runtime (CPU, batch size 1 where measured): the one figure a tag
    carries; the rest are in the description, the run's metrics and report.html."""
    own = [b for b in report.benchmarks if b.target == matrix.REFERENCE]
    references = {runtime.name for runtime in reference_runtimes()}
    reference = next((b for b in own if b.runtime in references and (b.device, b.batch_size) == (CPU, 1)),
                     own[0] if own else None)
    if reference:
        return {f"p50_ms.{reference.runtime}.{reference.device}.bs{reference.batch_size}": f"{reference.p50_ms:.4g}"}
    return {}


def version_tags(report: ValidationReport) -> dict[str, str]:
    """The short set the versions list shows: the verdict, the format to serve, one figure, what failed (if
    anything), the validation's run; a baseline's and a Keras derivation's facts where there are any. Each
    target's status and errors, the matrix and the links are in the description."""
    built = matrix.build(report)
    tags = {"status": report.status, "recommended_format": built.recommendation.target if built.recommendation else "none"}
    if built.recommendation:
        tags["recommended_speedup"] = f"{built.recommendation.speedup:.3g}"
    tags.update(key_figures(report))
    if failed := report.failed_checks():
        tags["failed_checks"] = ",".join(c.name for c in failed)[:5000]
    tags.update({
        "validated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "validator_version": validator_version(),
        "run_id": report.mlflow.run_id or "",
    })
    if report.derived_from:
        tags["derived_from"] = f"{report.derived_from.flavor} flavor: {report.derived_from.keras_file}"
        tags["derived_with_keras"] = report.derived_from.keras_version
    tags.update(baseline_figures(report))
    return {TAG_PREFIX + key: value for key, value in tags.items()}


def _max_drift(report: ValidationReport) -> float | None:
    values = [d["max_abs_diff"] for d in report.baseline.drift.values() if isinstance(d.get("max_abs_diff"), float)]
    return max(values) if values else None


def baseline_figures(report: ValidationReport) -> dict[str, str]:
    baseline = report.baseline
    if not baseline.source:
        return {}
    figures = {"baseline": baseline.source}
    compatibility = next((c for c in report.checks if c.name == "signature_compatibility"), None)
    if compatibility:
        figures["baseline_compatible"] = str(compatibility.status != "failed").lower()
    if baseline.latency_change_pct is not None:
        figures["latency_change_pct"] = f"{baseline.latency_change_pct:+.1f}"
    drift = _max_drift(report)
    if drift is not None:
        figures["drift_max_abs"] = f"{drift:.3g}"
    return figures


def describe_baseline(report: ValidationReport) -> list[str]:
    baseline = report.baseline
    if not baseline.source:
        return [f"No baseline comparison: {baseline.skipped_reason}.", ""] if baseline.skipped_reason else []
    derived = " (its SavedModel derived from its Keras flavor)" if baseline.derived_from else ""
    lines = [f"Compared with baseline `{baseline.source}`{derived}:"]
    compatibility = next((c for c in report.checks if c.name == "signature_compatibility"), None)
    if compatibility:
        lines.append(f"- signature: **{compatibility.status}**: {compatibility.message}")
    if baseline.latency_change_pct is not None:
        lines.append(f"- latency p50 {baseline.current_p50_ms:.4g} ms against {baseline.baseline_p50_ms:.4g} ms "
                     f"({baseline.latency_change_pct:+.1f} %), measured side by side")
    for name, drift in baseline.drift.items():
        lines.append(f"- output `{name}` drift: max abs {drift['max_abs_diff']:.3g}, max rel {drift['max_rel_diff']:.3g}"
                     if isinstance(drift.get("max_abs_diff"), float) else f"- output `{name}`: {drift.get('message')}")
    if baseline.skipped_reason:
        lines.append(f"- {baseline.skipped_reason}")
    return [*lines, ""]


def run_url(report: ValidationReport) -> str | None:
    """The run's page in the MLflow UI, when the tracking URI is a server (a file or database store has none)."""
    uri = report.mlflow.tracking_uri or ""
    if uri.startswith(("http://", "https://")):
        return f"{uri.rstrip('/')}/{run_route(report)}"
    return None


def run_route(report: ValidationReport) -> str:
    """The run's page relative to the MLflow UI that shows the version: a link in the description resolves
    against the page it is read on, whatever the server's address."""
    return f"#/experiments/{report.mlflow.experiment_id}/runs/{report.mlflow.run_id}"


def run_link(report: ValidationReport) -> str:
    return f"[MLflow run]({run_url(report) or run_route(report)})"


def describe_derivation(derived: DerivedFrom) -> str:
    saved = f" (saved with Keras {derived.saved_with_keras})" if derived.saved_with_keras else ""
    return (f"The SavedModel validated was derived by modelgate from the MLflow `{derived.flavor}` flavor's "
            f"`{derived.keras_file}`{saved}: loaded with Keras {derived.keras_version} (safe_mode=True) and exported "
            "with `model.export(format=\"tf_saved_model\")`.")


def describe_recommendation(built: matrix.Matrix) -> list[str]:
    """The format to serve, first and in words; the matrix itself is report.html's (too wide for this page)."""
    if built.recommendation is None:
        return [f"No format recommended: {built.reason}.", ""]
    found = built.recommendation
    return [f"**Serve `{found.target}`** on {found.runtime}/{found.device}: {found.speedup:.2f}× "
            f"{'faster than' if found.speedup >= 1 else 'the speed of'} {found.reference_runtime} (p50 "
            f"{found.p50_ms:.4g} ms against {found.reference_p50_ms:.4g} ms at batch size {found.batch_size}).", ""]


def _target_line(name: str, target: TargetSection, rows: list[matrix.MatrixRow]) -> str:
    errors = [row.max_abs_diff for row in rows if row.target == name and row.max_abs_diff is not None]
    figure = f" (max abs diff {max(errors):.3g})" if errors else ""
    return f"- `{name}` ({target.requirement}): **{target.status}**{figure}: {target.message}"


def describe(report: ValidationReport, flow_run_url: str | None) -> str:
    """The markdown a reviewer reads on the version page, narrow enough for it: the verdict, the format to
    serve, what failed, one line per target, the baseline, the links; the full matrix is in report.html."""
    built = matrix.build(report)
    lines = [f"## modelgate: **{report.status.upper()}**", ""]
    if report.status == "error":
        lines += [f"Validation could not complete: {report.first_error()}", ""]
    lines += describe_recommendation(built)
    if report.derived_from:
        lines += [describe_derivation(report.derived_from), ""]
    failed = report.failed_checks()
    if failed:
        lines += ["Failed checks:", *[f"- `{c.name}`: {c.message}" for c in failed], ""]
    warnings = [c for c in report.checks if c.status == "warning"]
    if warnings:
        lines += ["Warnings:", *[f"- `{c.name}`: {c.message}" for c in warnings], ""]
    if report.targets:
        lines += ["Conversion targets:", *[_target_line(name, t, built.rows) for name, t in report.targets.items()], ""]
    lines += describe_baseline(report)
    links = [run_link(report), *([f"[Prefect flow run]({flow_run_url})"] if flow_run_url else [])]
    lines += [" · ".join(links), "",
              f"Signature `{report.signature}`; the full format matrix is `report.html` in the run's artifacts; "
              f"modelgate {validator_version()}."]
    return "\n".join(lines)


SIGNED_TAG, ALIAS_TAG, TAMPERED_TAG = TAG_PREFIX + "signed", TAG_PREFIX + "alias", TAG_PREFIX + "tampered"
# Tags of the version's state rather than of its verdict, which a new verdict leaves alone: the signature and
# alias modelgate gave it, a tampering found, the schedule's claim on it (modelgate.service.scheduling).
STATE_TAGS = {SIGNED_TAG, ALIAS_TAG, TAMPERED_TAG, TAG_PREFIX + "claim", TAG_PREFIX + "attempt"}


def unsign(client: MlflowClient, version: RegistryVersion, keep_alias: bool = False) -> str | None:
    """The version is no longer vouched for: its signed tag goes, and (unless keep_alias, while it is signed
    again) so does the alias modelgate set on it, where it still points there. Returns the alias removed."""
    tags = client.get_model_version(version.name, version.version).tags or {}
    if SIGNED_TAG in tags:
        client.delete_model_version_tag(version.name, version.version, SIGNED_TAG)
    alias = tags.get(ALIAS_TAG)
    if alias and not keep_alias and str(client.get_registered_model(version.name).aliases.get(alias)) == version.version:
        client.delete_registered_model_alias(version.name, alias)
        return alias
    return None


def write_back(client: MlflowClient, version: RegistryVersion, report: ValidationReport, alias: str | None,
               flow_run_url: str | None, signed: bool = False) -> list[str]:
    """Tags and description always; the alias only when the validation passed and the version is signed, and
    a version that no longer passes loses what an earlier pass gave it. Returns what was done."""
    tags = version_tags(report)
    if signed:
        tags[SIGNED_TAG] = "true"
    held = client.get_model_version(version.name, version.version).tags or {}
    for key in sorted(set(held) - set(tags) - STATE_TAGS):
        if key.startswith(TAG_PREFIX):  # what an earlier verdict said (a failed check since fixed), or older tags
            client.delete_model_version_tag(version.name, version.version, key)
    for key, value in tags.items():
        client.set_model_version_tag(version.name, version.version, key, value)
    client.update_model_version(version.name, version.version, description=describe(report, flow_run_url))
    done = [f"tagged {version.uri} modelgate.status={report.status}"]
    if alias and signed and report.status == "passed":
        client.set_registered_model_alias(version.name, alias, version.version)
        client.set_model_version_tag(version.name, version.version, ALIAS_TAG, alias)
        done.append(f"alias '{alias}' -> {version.uri}")
    elif report.status != "passed" and (removed := unsign(client, version)):
        done.append(f"alias '{removed}' removed from {version.uri}: it no longer passes")
    return done


def reverify_signed(client: MlflowClient, tracking_uri: str, model_names: list[str], anchor: TrustAnchor,
                    scratch: Path) -> list[dict[str, str]]:
    """Every version modelgate signed, checked against its signature again: one whose files changed since is
    tagged modelgate.tampered (what changed) and loses the alias modelgate set on it. A version being published
    has no signed tag until its files are all written, so a check never lands between its uploads."""
    from modelgate.tracking.signing import verify

    rows = []
    for name in model_names:
        try:
            signed = client.search_model_versions(f"name='{name}' and tags.`{SIGNED_TAG}` = 'true'")
        except MlflowException as exc:
            rows.append({"version": name, "signature": f"not checked: {exc.message.splitlines()[0]}"})
            continue
        for mv in signed:
            version = RegistryVersion(name, str(mv.version))
            folder = scratch / name / version.version
            try:
                result = verify(download_version(client, tracking_uri, version, folder), anchor)
            except (MlflowException, ModelgateError) as exc:
                rows.append({"version": version.uri, "signature": f"not checked: {exc}"})
                continue
            finally:
                shutil.rmtree(folder, ignore_errors=True)
            row = {"version": version.uri, "signature": "verifies" if result.valid else "; ".join(result.lines())}
            if not result.valid:
                client.set_model_version_tag(name, version.version, TAMPERED_TAG, row["signature"][:5000])
                if removed := unsign(client, version):
                    row["alias"] = f"removed '{removed}'"
            rows.append(row)
    return rows

def signed_folder(source: str, tracking_uri: str | None, scratch: Path) -> Path:
    """The folder a verify reads: a registry version's files downloaded into scratch, a TF Serving base path's
    highest version, or the folder itself."""
    from modelgate.model.model_source import resolve_model_source

    if source.startswith("models:/"):
        from mlflow.exceptions import MlflowException

        from modelgate.request import ValidationRequest

        uri = ValidationRequest(source=source, mlflow={"tracking_uri": tracking_uri or ""}).resolved_tracking_uri()
        client = registry_client(uri)
        try:
            return download_version(client, uri, resolve_version(client, source), scratch)
        except MlflowException as exc:
            raise RegistryError(f"{source}: cannot download its files: {exc.message.splitlines()[0]}") from None
    from modelgate.tracking.signing import SIGNATURE_FILE

    if (Path(source) / SIGNATURE_FILE).is_file():
        return Path(source)
    return resolve_model_source(source).model_dir
