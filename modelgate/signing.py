"""What passed, signed; what is served, verified.

The registered copy of a version (its SavedModel, the converted artifacts, the attestation) is signed with the
OpenSSF model-signing library, so that a serving pipeline can check it with model-signing's own command line:

    python -m model_signing verify key FOLDER --signature FOLDER/model.sig --public_key KEY.pub

The attestation (attestation.json, an in-toto Statement) lies inside what is signed, beside the report it names
(modelgate-report.json): the verdict, the report's digest, the validator's version and the environment travel
with the bytes they speak of.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from modelgate.errors import ModelgateError
from modelgate.schemas import ValidationReport

SIGNATURE_FILE = "model.sig"
ATTESTATION_FILE = "attestation.json"
REPORT_FILE = "modelgate-report.json"  # the report as it stood when signed: what the attestation's digest names
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://modelgate.dev/validation/v1"
KEY_PASSWORD_VARIABLE = "MODELGATE_SIGNING_KEY_PASSWORD"


class SigningKeyError(ModelgateError):
    """A signing or public key that is missing or unusable: a usage error, and nothing is signed."""


def _password() -> bytes | None:
    password = os.environ.get(KEY_PASSWORD_VARIABLE)
    return password.encode() if password else None


def check_private_key(path: str | Path) -> Path:
    """The key model-signing signs with: a PEM elliptic-curve private key (its password, if any, in
    MODELGATE_SIGNING_KEY_PASSWORD)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    path = Path(path)
    if not path.is_file():
        raise SigningKeyError(f"signing key {path}: no such file")
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), _password())
    except (ValueError, TypeError) as exc:
        raise SigningKeyError(f"signing key {path}: not a PEM private key this password opens ({exc})") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise SigningKeyError(f"signing key {path}: an elliptic-curve private key is needed, found {type(key).__name__}")
    return path


@dataclass(frozen=True)
class TrustAnchor:
    """What a signature is verified with: the signing key's public half, or the certificate chain that issued
    the signing certificate (model-signing's key and certificate modes)."""

    public_key: Path | None = None
    certificate_chain: Path | None = None

    def __str__(self) -> str:
        return str(self.certificate_chain or self.public_key)

    def checked(self) -> TrustAnchor:
        if self.certificate_chain:
            _certificates(self.certificate_chain, "certificate chain")
        else:
            check_public_key(self.public_key)
        return self

    def verifier(self):
        from model_signing import verifying

        if self.certificate_chain:
            return verifying.Config().use_certificate_verifier(certificate_chain=[self.certificate_chain])
        return verifying.Config().use_elliptic_key_verifier(public_key=self.public_key)


def _certificates(path: str | Path, what: str) -> list:
    from cryptography import x509

    path = Path(path)
    if not path.is_file():
        raise SigningKeyError(f"{what} {path}: no such file")
    try:
        return x509.load_pem_x509_certificates(path.read_bytes())
    except ValueError as exc:
        raise SigningKeyError(f"{what} {path}: not PEM certificates ({exc})") from None


def signer_anchor(private_key: str | Path, certificate: str | Path | None, directory: Path) -> TrustAnchor:
    """What verifies the signatures this signer makes, written in directory: the key's public half, or the
    chain that follows the signing certificate in its file (a self-signed certificate is its own chain)."""
    from cryptography.hazmat.primitives import serialization

    if certificate:
        certificates = _certificates(certificate, "signing certificate")
        path = directory / "certificate-chain.pem"
        path.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certificates[1:] or certificates))
        return TrustAnchor(certificate_chain=path)
    key = serialization.load_pem_private_key(Path(check_private_key(private_key)).read_bytes(), _password())
    path = directory / "signing-key.pub"
    path.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                   serialization.PublicFormat.SubjectPublicKeyInfo))
    return TrustAnchor(public_key=path)


def check_public_key(path: str | Path) -> Path:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    path = Path(path)
    if not path.is_file():
        raise SigningKeyError(f"public key {path}: no such file")
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except ValueError as exc:
        raise SigningKeyError(f"public key {path}: not a PEM public key ({exc})") from None
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise SigningKeyError(f"public key {path}: an elliptic-curve public key is needed, found {type(key).__name__}")
    return path


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _signed_files(folder: Path) -> list[Path]:
    skipped = {SIGNATURE_FILE, ATTESTATION_FILE, REPORT_FILE}
    return sorted(p for p in folder.rglob("*") if p.is_file() and str(p.relative_to(folder)) not in skipped)


def attestation(folder: Path, report: ValidationReport, report_file: Path) -> dict:
    """An in-toto Statement: its subjects the folder's files, its predicate the validation that passed them."""
    return {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": str(path.relative_to(folder)), "digest": {"sha256": _sha256(path)}}
                    for path in _signed_files(folder)],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "verdict": report.status,
            "signature": report.signature,
            "report": {"name": REPORT_FILE, "digest": {"sha256": _sha256(report_file)},
                       "mlflow_run_id": report.mlflow.run_id},
            "validator": {"name": "modelgate", "version": metadata.version("modelgate")},
            "validated_at": report.finished_at,
            "environment": report.environment,
        },
    }


def sign(folder: Path, private_key: str | Path, report: ValidationReport, certificate: str | Path | None = None,
         ) -> list[Path]:
    """Write the report as it stands and the attestation into folder, then sign folder (the signature itself
    excluded) as model.sig, with the key alone or, given its certificate (the chain after it in the same file),
    in model-signing's certificate mode. Returns the files written."""
    from cryptography.hazmat.primitives import serialization
    from model_signing import hashing, signing

    check_private_key(private_key)
    config = signing.Config().use_elliptic_key_signer(private_key=private_key,
                                                      password=os.environ.get(KEY_PASSWORD_VARIABLE))
    if certificate:
        leaf, *chain = _certificates(certificate, "signing certificate")
        pem = serialization.Encoding.PEM
        with tempfile.TemporaryDirectory(prefix="modelgate-certificate-") as scratch:
            (leaf_file := Path(scratch) / "signing-certificate.pem").write_bytes(leaf.public_bytes(pem))
            (chain_file := Path(scratch) / "chain.pem").write_bytes(b"".join(c.public_bytes(pem) for c in chain))
            try:
                config = signing.Config().use_certificate_signer(
                    private_key=private_key, signing_certificate=leaf_file, certificate_chain=[chain_file] if chain else [])
            except ValueError as exc:
                raise SigningKeyError(f"signing certificate {certificate}: {exc}") from None
    report_file = folder / REPORT_FILE
    report_file.write_text(report.model_dump_json(indent=2))
    (folder / ATTESTATION_FILE).write_text(json.dumps(attestation(folder, report, report_file), indent=2,
                                                      sort_keys=True))
    signature = folder / SIGNATURE_FILE
    config.set_hashing_config(hashing.Config().set_ignored_paths(paths=[SIGNATURE_FILE])).sign(folder, signature)
    return [report_file, folder / ATTESTATION_FILE, signature]


MISMATCH = "Signature mismatch: "


@dataclass
class Verification:
    """What verify found: nothing (valid), or each file changed, added or missing, or why it could not check."""

    folder: Path
    changed: list[str] = field(default_factory=list)
    added: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    problem: str = ""  # the signature itself is missing, unreadable or not made with this key
    verdict: str = ""  # the attestation's, once the files verify

    @property
    def valid(self) -> bool:
        return not (self.changed or self.added or self.missing or self.problem)

    def lines(self) -> list[str]:
        if self.problem:
            return [self.problem]
        return ([f"changed: {name}" for name in self.changed] + [f"added: {name}" for name in self.added]
                + [f"missing: {name}" for name in self.missing])

    def summary(self) -> str:
        if self.valid:
            return f"{self.folder}: the signature verifies; attested verdict: {self.verdict or 'none'}"
        return f"{self.folder}: " + "; ".join(self.lines())


def verify(folder: Path, anchor: TrustAnchor) -> Verification:
    """The folder against its model.sig, as model-signing's CLI verifies it."""
    anchor.checked()
    result = Verification(folder)
    signature = folder / SIGNATURE_FILE
    if not signature.is_file():
        result.problem = f"no signature: {SIGNATURE_FILE} is missing (was this version signed?)"
        return result
    try:
        anchor.verifier().verify(folder, signature)
    except ValueError as exc:
        message = str(exc)
        if not message.startswith(MISMATCH):
            result.problem = f"the signature does not verify with {anchor}: {message.splitlines()[0]}"
            return result
        # The signature is genuine and the files differ: model-signing lists each difference as a string.
        for difference in ast.literal_eval(message.removeprefix(MISMATCH)):
            if difference.startswith("Hash mismatch for '"):
                result.changed.append(difference.removeprefix("Hash mismatch for '").partition("': Expected")[0])
            else:
                names = [name.strip() for name in difference.partition("': ")[2].split(",")]
                (result.added if difference.startswith("Extra") else result.missing).extend(names)
        return result
    except Exception as exc:  # noqa: BLE001 - a malformed bundle or a chain that fails raises what its parser raises
        result.problem = f"the signature does not verify with {anchor}: {type(exc).__name__}: {exc}"
        return result
    result.verdict = json.loads((folder / ATTESTATION_FILE).read_text())["predicate"]["verdict"]
    return result


def signed_folder(source: str, tracking_uri: str | None, scratch: Path) -> Path:
    """The folder a verify reads: a registry version's files downloaded into scratch, a TF Serving base path's
    highest version, or the folder itself."""
    from modelgate.model_source import resolve_model_source

    if source.startswith("models:/"):
        from modelgate.registry import download_version, registry_client, resolve_version
        from modelgate.schemas import ValidationRequest

        uri = ValidationRequest(source=source, tracking_uri=tracking_uri or "").resolved_tracking_uri()
        client = registry_client(uri)
        return download_version(client, uri, resolve_version(client, source), scratch)
    if (Path(source) / SIGNATURE_FILE).is_file():
        return Path(source)
    return resolve_model_source(source).model_dir
