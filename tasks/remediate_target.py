"""remediate-<target>: the target's own variants, fastest expected first, until one passes its criteria."""

from prefect import task
from prefect.cache_policies import NO_CACHE

from modelgate.request import ValidationRequest
from modelgate.stages import (
    ComparisonBatches,
    PreparedInputs,
    SignatureChoice,
    TargetArtifact,
    TargetComparison,
    TargetLocalisation,
    TargetRemediation,
)


def remediation_wanted(comparison: TargetComparison, request: ValidationRequest) -> bool:
    return (isinstance(comparison, TargetComparison) and comparison.mismatched
            and request.checks.remediation_budget_s > 0)


def served_artifact(remedy: TargetRemediation, default: TargetArtifact) -> TargetArtifact:
    """What the target's benchmark and its children take: the chosen variant's artifact where it stands."""
    return remedy.served(default) if isinstance(remedy, TargetRemediation) else default


@task(name="remediate-target", cache_policy=NO_CACHE)
def remediate_target(
    name: str, choice: SignatureChoice, parent: TargetArtifact | None, inputs: PreparedInputs,
    batches: ComparisonBatches, comparison: TargetComparison, localisation: TargetLocalisation | None,
    request: ValidationRequest, workdir: str,
) -> TargetRemediation:
    raise NotImplementedError("being written")
