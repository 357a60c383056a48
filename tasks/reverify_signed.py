import tempfile
from pathlib import Path

from prefect import task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE

from modelgate.registry import registry_client, reverify_signed
from modelgate.signing import public_key_file


@task(name="reverify-signed", cache_policy=NO_CACHE)
def reverify_signed_versions(model_names: list[str], tracking_uri: str, signing_key: str) -> list[dict[str, str]]:
    """The versions this validator signed, verified again with its key's public half: one changed since it was
    signed is tagged modelgate.tampered and loses its alias."""
    with tempfile.TemporaryDirectory(prefix="modelgate-reverify-") as scratch:
        public_key = public_key_file(signing_key, Path(scratch))
        rows = reverify_signed(registry_client(tracking_uri), tracking_uri, model_names, public_key, Path(scratch))
    tampered = [row for row in rows if row["signature"] != "verifies"]
    create_table_artifact(
        key="signed-versions", table=rows or [{"version": "none", "signature": "no signed versions"}],
        description=f"Signed versions verified again in this tick: {len(tampered)} of {len(rows)} changed since",
    )
    return rows
