import csv
from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from modelgate.compare import check_tolerance_names
from modelgate.environment import cuda_provider_available
from modelgate.errors import ModelRunError
from modelgate.inputs import InputsUnavailable, save_npz, synthesize
from modelgate.onnx_jobs import Batch, onnx_comparison_job, tensorflow_references_job
from modelgate.sandbox import limits_of, run_isolated
from modelgate.schemas import (
    OnnxComparison,
    OnnxExport,
    PreparedInputs,
    ReferenceOutputs,
    RuntimeComparison,
    SignatureChoice,
    ValidationRequest,
)

CPU, CUDA = "CPUExecutionProvider", "CUDAExecutionProvider"
TABLE_FIGURES = [
    "passed", "max_abs_diff", "mean_abs_diff", "median_abs_diff", "p99_abs_diff", "max_rel_diff", "mean_rel_diff",
    "median_rel_diff", "p99_rel_diff", "failing_elements", "total_elements", "failing_share", "min_passing_atol",
    "min_passing_rtol", "cosine_similarity", "top1_agreement", "top5_agreement", "atol", "rtol", "message",
]


def comparison_batches(
    choice: SignatureChoice, inputs: PreparedInputs, reference: ReferenceOutputs, request: ValidationRequest,
    folder: Path,
) -> list[Batch]:
    """The checked inputs with run-checks' reference, then seeded batches up to onnx_batches of them
    (all of them on top, when the checked inputs are the user's file), so one lucky sample cannot pass."""
    batches = [(inputs.path, reference.path)]
    first_seed = request.seed if inputs.section.source == "file" else request.seed + 1
    for seed in range(first_seed, request.seed + request.onnx_batches):
        try:
            feeds = synthesize(
                choice.signature, inputs.batch_size(request), request.unknown_dim_size, seed, request.value_range
            )
        except InputsUnavailable:
            break  # only the user's inputs can feed this signature
        inputs_path = save_npz(feeds, folder / f"inputs_seed{seed}.npz")
        batches.append((str(inputs_path), str(folder / f"tensorflow_outputs_seed{seed}.npz")))
    return batches


def write_table(runtimes: dict[str, RuntimeComparison], path: Path) -> Path:
    with path.open("w", newline="") as table:
        writer = csv.writer(table)
        writer.writerow(["providers", "output", *TABLE_FIGURES])
        for runtime in runtimes.values():
            for name, result in runtime.outputs.items():
                writer.writerow([" ".join(runtime.providers), name, *(getattr(result, f) for f in TABLE_FIGURES)])
    return path


@task(name="compare-onnx", cache_policy=NO_CACHE)
def compare_onnx(
    choice: SignatureChoice, exported: OnnxExport, inputs: PreparedInputs, reference: ReferenceOutputs,
    request: ValidationRequest, workdir: str,
) -> OnnxComparison:
    """ONNX Runtime against TensorFlow on the same batches, by output name, with atol and rtol per output:
    on the CPU provider always, and on the CUDA provider too where this ONNX Runtime has it."""
    tolerances = {"atol": choice.atol, "rtol": choice.rtol}
    if inputs.path is None or reference.path is None:
        return OnnxComparison(
            cpu=None, **tolerances, skipped_reason=inputs.section.message or "no TensorFlow reference outputs"
        )
    outputs = list(choice.signature.outputs)
    check_tolerance_names(choice.atol, outputs, "atol")
    check_tolerance_names(choice.rtol, outputs, "rtol")
    folder = Path(workdir) / "onnx_comparison"
    folder.mkdir(exist_ok=True)
    batches = comparison_batches(choice, inputs, reference, request, folder)
    log_path = Path(workdir) / "compare-onnx.log"
    limits = limits_of(request)
    if len(batches) > 1:
        run_isolated(
            tensorflow_references_job, choice.model_dir, choice.tags, choice.model_format, choice.signature.key,
            batches[1:], limits=limits, label="compare-onnx (TensorFlow on the extra batches)", log_path=log_path,
        )

    def compare_on(providers: list[str], label: str) -> RuntimeComparison:
        return run_isolated(
            onnx_comparison_job, exported.path, batches, choice.atol, choice.rtol, providers, str(folder), label,
            limits=limits, label=f"compare-onnx ({label})", log_path=log_path,
        ).value

    runtimes = {"cpu": compare_on([CPU], "cpu")}
    cuda_message = ""
    if not cuda_provider_available():
        cuda_message = "skipped: this ONNX Runtime has no CUDA provider"
    else:
        try:
            runtimes["cuda"] = compare_on([CUDA, CPU], "cuda")
        except ModelRunError as exc:
            cuda_message = f"error: {exc}"
        else:
            if runtimes["cuda"].providers[0] != CUDA:
                cuda_message = f"ONNX Runtime fell back from CUDA to {', '.join(runtimes['cuda'].providers)}"
    table = write_table(runtimes, Path(workdir) / "onnx_comparison.csv")
    histograms = {
        Path(path).name: path for runtime in runtimes.values() for path in runtime.histograms.values()
    }
    return OnnxComparison(
        cpu=runtimes["cpu"], cuda=runtimes.get("cuda"), cuda_message=cuda_message, **tolerances,
        artifacts={"onnx_comparison.csv": str(table), **histograms},
    )
