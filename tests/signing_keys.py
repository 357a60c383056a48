"""Signing keys as an operator makes them (an elliptic-curve pair in PEM), for the tests that sign versions."""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec


def key_pair(directory: Path) -> tuple[Path, Path]:
    """directory/signing-key.pem and directory/signing-key.pub, made once."""
    private, public = directory / "signing-key.pem", directory / "signing-key.pub"
    if not private.is_file():
        directory.mkdir(parents=True, exist_ok=True)
        key = ec.generate_private_key(ec.SECP256R1())
        private.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                              serialization.NoEncryption()))
        public.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                         serialization.PublicFormat.SubjectPublicKeyInfo))
    return private, public
