from prefect import task
from prefect.cache_policies import NO_CACHE

from modelgate.execution.pools import asked_targets
from modelgate.report import TargetSection
from modelgate.request import ValidationRequest
from modelgate.stages import TargetPlan


@task(name="plan-targets", cache_policy=NO_CACHE)
def plan_targets(request: ValidationRequest) -> TargetPlan:
    """The targets asked, each after its parent; one whose packages are missing is reported as skipped and
    not converted ('all' asks only for the targets whose packages are installed)."""
    sections, runnable = {}, []
    for target in asked_targets(request):
        section = TargetSection(
            name=target.name, artifact_format=target.artifact_format, parent=target.parent,
            requirement=request.requirement_of(target.name), criteria=target.criteria,
        )
        missing = target.missing_packages()
        if missing and "all" in request.targets:
            continue
        if missing:
            section.message = f"not converted: this environment lacks {', '.join(missing)}"
        elif target.parent and target.parent not in runnable:
            section.message = f"not converted: its parent {target.parent} cannot be"
        else:
            runnable.append(target.name)
        sections[target.name] = section
    return TargetPlan(sections=sections, runnable=runnable)
