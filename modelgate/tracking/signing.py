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
from modelgate.report import ValidationReport

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


def _private_key(path: str | Path):
    """The key model-signing signs with: a PEM elliptic-curve private key (its password, if any, in
    MODELGATE_SIGNING_KEY_PASSWORD), loaded, or SigningKeyError saying why not."""
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
    return key


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
    """What verifies the signatures this signer makes, written in directory: the key's public half, or the chain
    that follows the signing certificate in its file (a self-signed certificate is its own). Checks the key, and
    that the certificate is the key's, so that a signer that cannot sign is a usage error before any work."""
    from cryptography.hazmat.primitives import serialization

    key = _private_key(private_key)
    pem = serialization.Encoding.PEM
    if not certificate:
        path = directory / "signing-key.pub"
        path.write_bytes(key.public_key().public_bytes(pem, serialization.PublicFormat.SubjectPublicKeyInfo))
        return TrustAnchor(public_key=path)
    if _password():
        # model-signing's certificate signer loads the key without a password.
        raise SigningKeyError(f"signing key {private_key}: certificate mode takes an unencrypted key")
    leaf, *chain = _certificates(certificate, "signing certificate")
    if leaf.public_key() != key.public_key():
        raise SigningKeyError(f"signing certificate {certificate}: it certifies another key than {private_key}")
    if not chain and leaf.issuer != leaf.subject:
        raise SigningKeyError(f"signing certificate {certificate}: issued by {leaf.issuer.rfc4514_string()}, whose "
                              "certificates must follow it in the file")
    path = directory / "certificate-chain.pem"
    path.write_bytes(b"".join(c.public_bytes(pem) for c in chain or [leaf]))
    return TrustAnchor(certificate_chain=path)


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

    with tempfile.TemporaryDirectory(prefix="modelgate-signing-") as scratch:
        signer_anchor(private_key, certificate, Path(scratch))
        if certificate:
            leaf, *chain = _certificates(certificate, "signing certificate")
            pem = serialization.Encoding.PEM
            (leaf_file := Path(scratch) / "signing-certificate.pem").write_bytes(leaf.public_bytes(pem))
            (chain_file := Path(scratch) / "chain.pem").write_bytes(b"".join(c.public_bytes(pem) for c in chain))
            config = signing.Config().use_certificate_signer(
                private_key=private_key, signing_certificate=leaf_file, certificate_chain=[chain_file] if chain else [])
        else:
            # cryptography takes the password as bytes, whatever model-signing's annotation says
            config = signing.Config().use_elliptic_key_signer(private_key=private_key, password=_password())
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
    problem: str = ""  # no signature, one not made with this key, or no attested pass
    verdict: str = ""  # the attestation's, once the files verify

    @property
    def valid(self) -> bool:
        return not (self.changed or self.added or self.missing or self.problem)

    def lines(self) -> list[str]:
        if self.problem:
            return [self.problem]
        return ([f"changed: {name}" for name in self.changed] + [f"added: {name}" for name in self.added]
                + [f"missing: {name}" for name in self.missing])



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
        try:
            differences = ast.literal_eval(message.removeprefix(MISMATCH))
        except (ValueError, SyntaxError):
            differences, result.problem = [], message.splitlines()[0]
        for difference in differences:
            if difference.startswith("Hash mismatch for '"):
                result.changed.append(difference.removeprefix("Hash mismatch for '").partition("': Expected")[0])
            else:
                names = [name.strip() for name in difference.partition("': ")[2].split(",")]
                (result.added if difference.startswith("Extra") else result.missing).extend(names)
        return result
    except Exception as exc:  # noqa: BLE001 - a malformed bundle or a chain that fails raises what its parser raises
        result.problem = f"the signature does not verify with {anchor}: {type(exc).__name__}: {exc}"
        return result
    try:
        result.verdict = json.loads((folder / ATTESTATION_FILE).read_text())["predicate"]["verdict"]
    except (OSError, ValueError, KeyError, TypeError):
        result.problem = f"the files match their signature, but no readable {ATTESTATION_FILE} is among them"
    else:
        if result.verdict != "passed":
            result.problem = f"the files match their signature, and the validation it attests was {result.verdict}"
    return result

