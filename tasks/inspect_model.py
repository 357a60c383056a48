from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from modelgate.graph_inputs import with_input_facts
from modelgate.model_source import resolve_model_source
from modelgate.op_allowlist import import_op_libraries
from modelgate.savedmodel import (
    describe_meta_graph,
    find_saved_model_file,
    model_format,
    read_saved_model_proto,
    reference_outputs,
    write_loadable_copy,
)
from modelgate.schemas import Check, Inspection
from modelgate.variables_check import verify_variables


@task(name="inspect", cache_policy=NO_CACHE)
def inspect_model(
    model_dir: str, workdir: str, version: int | None = None, op_libraries: list[str] = (),
) -> Inspection:
    """Read saved_model.pb as a protobuf: tag-sets, signatures and ops, what each entry point can execute
    (the op scan), and check that variables/ holds what the graph restores, without running any graph. A TF
    Serving base path resolves to its version folder. The op libraries are imported first, so that their
    ops are known. A loadable copy, when one is needed, goes under workdir, the validation's own folder."""
    source = resolve_model_source(model_dir, version)
    import_op_libraries(list(op_libraries))
    saved_model = read_saved_model_proto(source.model_dir)
    verify_variables(source.model_dir, saved_model)
    meta_graphs = [
        with_input_facts(describe_meta_graph(meta_graph, source.model_dir, op_libraries), meta_graph, source.model_dir)
        for meta_graph in saved_model.meta_graphs
    ]
    loadable, checks = source.model_dir, []
    references = reference_outputs(saved_model)
    if references:
        loadable = write_loadable_copy(source.model_dir, saved_model, Path(workdir) / "loadable_model")
        checks.append(Check(
            name="reference_dtypes", status="passed", severity="info",
            message=f"outputs {', '.join(references)} are TF1 reference types (e.g. float32_ref), reported by "
            f"their value dtype; TF2 loads them only through a read, so model stages load a copy that adds an "
            f"Identity per such output ({loadable})",
        ))
    return Inspection(
        model_dir=str(loadable), resolved_model_dir=str(source.model_dir), model_version=source.version,
        model_format=model_format(source.model_dir, saved_model),
        saved_model_file=str(find_saved_model_file(source.model_dir)), meta_graphs=meta_graphs, checks=checks,
    )
