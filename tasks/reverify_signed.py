import tempfile
from pathlib import Path

from prefect import task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE

from modelgate.errors import ModelgateError
from modelgate.tracking.registry import registry_client, reverify_signed
from modelgate.tracking.signing import signer_anchor


@task(name="reverify-signed", cache_policy=NO_CACHE)
def reverify_signed_versions(
    model_names: list[str], tracking_uri: str, signing_key: str, signing_certificate: str = ""
) -> list[dict[str, str]]:
    """The versions this validator signed, verified again with what verifies its key: one changed since it was
    signed is tagged modelgate.tampered and loses its alias."""
    with tempfile.TemporaryDirectory(prefix="modelgate-reverify-") as scratch:
        try:
            anchor = signer_anchor(signing_key, signing_certificate, Path(scratch))
        except ModelgateError as exc:
            rows = [{"version": "none", "signature": f"not checked: {exc}"}]
        else:
            rows = reverify_signed(registry_client(tracking_uri), tracking_uri, model_names, anchor, Path(scratch))
    changed = sum(row["signature"] != "verifies" and not row["signature"].startswith("not checked") for row in rows)
    create_table_artifact(
        key="signed-versions", table=rows or [{"version": "none", "signature": "no signed versions"}],
        description=f"Signed versions verified again in this tick: {changed} of {len(rows)} changed since",
    )
    return rows
