"""The relay's TLS certificate, made at set-up, and the trust store MLflow's webhook delivery reads it from.

MLflow 3.17 delivers webhooks through a requests session with trust_env=False (so that a proxy cannot
bypass its SSRF check): REQUESTS_CA_BUNDLE, CURL_CA_BUNDLE and SSL_CERT_FILE are all ignored, and the relay
is verified against certifi's bundle alone. A private CA therefore reaches MLflow as a copy of the certifi
package whose bundle also holds it, put ahead of site-packages with PYTHONPATH=<dir>/trust on the MLflow
server only; nothing installed is changed.

The CA's key is never written: the CA signs the relay's certificate once and can sign nothing else.
"""

from __future__ import annotations

import datetime
import ipaddress
import shutil
from dataclasses import dataclass
from pathlib import Path

import certifi
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALID_DAYS = 825
RENEW_BEFORE = datetime.timedelta(days=30)


@dataclass(frozen=True)
class RelayTLS:
    directory: Path

    @property
    def ca(self) -> Path:
        return self.directory / "ca.pem"

    @property
    def certfile(self) -> Path:
        return self.directory / "relay.pem"

    @property
    def keyfile(self) -> Path:
        return self.directory / "relay-key.pem"

    @property
    def trust(self) -> Path:
        """The folder to put on the MLflow server's PYTHONPATH."""
        return self.directory / "trust"


def _subject_names(hostnames: list[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for hostname in hostnames:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(hostname)))
        except ValueError:
            names.append(x509.DNSName(hostname))
    return names


def _still_good(tls: RelayTLS, hostnames: list[str]) -> bool:
    if not (tls.ca.exists() and tls.certfile.exists() and tls.keyfile.exists()):
        return False
    certificate = x509.load_pem_x509_certificate(tls.certfile.read_bytes())
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    fresh = certificate.not_valid_after_utc - datetime.datetime.now(datetime.UTC) > RENEW_BEFORE
    return fresh and set(names) == set(_subject_names(hostnames))


def _certificate(subject: x509.Name, issuer: x509.Name, public_key, signing_key, now: datetime.datetime,
                 extensions: list[tuple[x509.ExtensionType, bool]]) -> x509.Certificate:
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(public_key)
               .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=VALID_DAYS)))
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical=critical)
    return builder.sign(signing_key, hashes.SHA256())


def _issue(tls: RelayTLS, hostnames: list[str]) -> None:
    now = datetime.datetime.now(datetime.UTC)
    ca_key, relay_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"modelgate relay CA {now:%Y-%m-%d %H:%M:%S}")])
    ca = _certificate(ca_name, ca_name, ca_key.public_key(), ca_key, now, [
        (x509.BasicConstraints(ca=True, path_length=0), True),
        (x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                       data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                       encipher_only=False, decipher_only=False), True),
        (x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False),
    ])
    relay = _certificate(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostnames[0])]), ca_name,
                         relay_key.public_key(), ca_key, now, [
        (x509.BasicConstraints(ca=False, path_length=None), True),
        (x509.SubjectAlternativeName(_subject_names(hostnames)), False),
        (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False),
        (x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False),
        (x509.SubjectKeyIdentifier.from_public_key(relay_key.public_key()), False),
    ])
    tls.keyfile.touch(mode=0o600)
    tls.keyfile.write_bytes(relay_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                    serialization.NoEncryption()))
    tls.certfile.write_bytes(relay.public_bytes(serialization.Encoding.PEM))
    tls.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))


def _write_trust(tls: RelayTLS) -> None:
    """certifi as installed, its bundle plus the relay's CA; rebuilt each time, so it follows certifi's updates."""
    package = tls.trust / "certifi"
    shutil.rmtree(tls.trust, ignore_errors=True)
    shutil.copytree(Path(certifi.__file__).parent, package, ignore=shutil.ignore_patterns("__pycache__"))
    bundle = package / "cacert.pem"
    bundle.write_bytes(bundle.read_bytes().rstrip(b"\n") + b"\n" + tls.ca.read_bytes())


def make_relay_tls(directory: Path, hostnames: list[str]) -> tuple[RelayTLS, bool]:
    """The certificate for these host names (kept if it still fits and is not about to expire), and the trust
    store; True when a new certificate was issued."""
    if not hostnames:
        raise ValueError("the relay's certificate needs at least one host name")
    directory.mkdir(parents=True, exist_ok=True)
    tls = RelayTLS(directory)
    issued = not _still_good(tls, hostnames)
    if issued:
        _issue(tls, hostnames)
    _write_trust(tls)
    return tls, issued
