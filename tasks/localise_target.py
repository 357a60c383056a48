"""localise-<target>: where a target's error starts (see modelgate.numerics.divergence)."""

from prefect import task
from prefect.cache_policies import NO_CACHE

from modelgate.request import ValidationRequest
from modelgate.stages import ComparisonBatches, SignatureChoice, TargetArtifact, TargetComparison, TargetLocalisation


def localisation_wanted(comparison: TargetComparison, request: ValidationRequest) -> bool:
    """A comparison that missed its criteria is always localised; one that passed only when --localise asks."""
    if not isinstance(comparison, TargetComparison) or comparison.skipped_reason or not comparison.comparisons:
        return False
    return comparison.mismatched or request.checks.localise


@task(name="localise-target", cache_policy=NO_CACHE)
def localise_target(
    name: str, choice: SignatureChoice, artifact: TargetArtifact, batches: ComparisonBatches,
    comparison: TargetComparison, request: ValidationRequest, workdir: str,
) -> TargetLocalisation:
    raise NotImplementedError("being written")
