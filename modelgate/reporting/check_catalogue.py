"""Every check a validation can report: its name, its severity, the stage that makes it and its rule.

The table of checks in docs/validating.md is this catalogue (tests/reporting/test_check_catalogue.py holds them equal, and holds every
check name the code writes to an entry). Names in angle brackets stand for a family, read from the target and
runtime registries: `<target>` a conversion target (onnx, litert, ...), `<runtime>` a target and runtime as
`<target>_<runtime>` or tensorflow, and `<format>_<check>` the checks of a target's file that its declaration
lists (Target.file_checks).
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class CheckSpec:
    name: str
    severity: str  # error, warning or info; "error or warning" where the request decides (an optional target)
    stage: str
    rule: str

    @property
    def described(self) -> str:
        """The rule, with a family's members spelled out where it names them (`{file_checks}`)."""
        return self.rule.replace("{file_checks}", ", ".join(f"`{name}`" for name in file_checks()))

    def matches(self, name: str) -> bool:
        pattern = re.escape(self.name)
        for family, alternatives in _families().items():
            pattern = pattern.replace(re.escape(family), f"(?:{'|'.join(map(re.escape, alternatives))})")
        return re.fullmatch(pattern, name) is not None


def file_checks() -> list[str]:
    """The checks of the targets' files, as each target declares them, in the registry's order."""
    from modelgate.targets import registry

    return list(dict.fromkeys(name for target in registry().values() for name in target.file_checks))


def _families() -> dict[str, list[str]]:
    """What each family name stands for, from the target and runtime registries."""
    from modelgate.runtimes import reference_runtimes
    from modelgate.targets import registry

    targets = registry().values()
    return {
        "<format>_<check>": file_checks(),
        "<target>": [target.name.replace("-", "_") for target in targets],
        "<runtime>": [*dict.fromkeys(runtime.pool for runtime in reference_runtimes()),
                      *(f"{t.name}_{runtime.name}" for t in targets for runtime in t.runtimes())],
    }


CATALOGUE = [
    CheckSpec("model_loads", "error", "inspect, load-and-wrap, derive-saved-model",
              "TensorFlow (or Keras, for a registry version's Keras file) loads the model"),
    CheckSpec("saved_model_export", "error", "derive-saved-model", "Keras exports the registry version's Keras file as a SavedModel"),
    CheckSpec("reference_dtypes", "info", "inspect", "signature tensors that are variables themselves (`float32_ref`) are read by value"),
    CheckSpec("signature_selection", "error", "select-signature",
              "the asked signature, else serving_default, else the single predict-style one (a warning)"),
    CheckSpec("tolerances", "info", "select-signature",
              "the tolerances used: by default those of the lowest float precision the graph computes in"),
    CheckSpec("device_placement", "info", "select-signature",
              "the devices the graph's ops were pinned to at export; loaded with soft placement, as TF Serving does"),
    CheckSpec("tensor_dtypes", "error", "check-signature", "every input and output has a TensorFlow dtype (reference dtypes noted)"),
    CheckSpec("known_rank", "warning", "check-signature", "every input and output has a known rank"),
    CheckSpec("dynamic_batch", "warning", "check-signature", "every batched input's first dimension is dynamic"),
    CheckSpec("meaningful_output_names", "warning", "check-signature", "no generated names (`output_0`, `Identity_1`, ...)"),
    CheckSpec("unique_tensor_names", "error", "check-signature",
              "no name both input and output, no two names bound to one graph tensor"),
    CheckSpec("declared_shapes", "warning", "check-signature",
              "every shape a TF1 signature declares is its graph's (the graph's are used)"),
    CheckSpec("contract", "error", "check-signature", "`--contract FILE` (YAML or JSON) matches: names, dtypes, shapes"),
    CheckSpec("signature_compatibility", "error", "check-signature",
              "against the baseline (`--baseline`, default the `champion` of the same registered model): nothing a "
              "caller of that version relies on broke"),
    CheckSpec("op_safety", "error", "scan-ops", "every op the model can run is on the allowlist and keeps its rules (see Op scan)"),
    CheckSpec("os_sandbox", "error", "any model stage",
              "the model did nothing the OS sandbox refuses (a warning where the kernel has no Landlock)"),
    CheckSpec("dynamic_batch_runs", "error", "probe-batch", "the signature runs at the inputs' batch size on its dynamic batch dimension"),
    CheckSpec("keras_wrapper_built", "error", "load-and-wrap", "the signature wraps as a functional keras.Model"),
    CheckSpec("keras_wrapper_parity", "error", "load-and-wrap", "the wrapper's `predict` gives the reference runtime's outputs"),
    CheckSpec("output_names", "error", "run-checks", "the outputs are those the signature declares, by name"),
    CheckSpec("output_dtypes", "error", "run-checks", "each output has its declared dtype"),
    CheckSpec("output_shapes", "error", "run-checks", "each output has its declared shape"),
    CheckSpec("finite_outputs", "error", "run-checks", "no NaN or Inf in any output"),
    CheckSpec("deterministic", "error", "run-checks", "two calls on the same inputs give identical outputs"),
    CheckSpec("batch_consistency", "error", "run-checks",
              "each row of the batch equals that row run alone, within `--atol`/`--rtol` of the element or `rtol` of the "
              "output's largest magnitude (a batch and a row may sum long reductions in another order)"),
    CheckSpec("warmup_requests", "error", "prepare-inputs",
              "the TF Serving warm-up records a SavedModel ships (assets.extra/tf_serving_warmup_requests) feed its "
              "signature: the validation runs on them (on synthesized inputs, naming the record, where they cannot)"),
    CheckSpec("signature_valid", "error", "publish-registry",
              "the version as the registry stores it verifies against the signature modelgate made (the alias "
              "depends on it)"),
    CheckSpec("benchmark", "error", "benchmark", "skipped, with the reason, when nothing could be timed"),
    CheckSpec("benchmark_keras", "error", "benchmark", "skipped, with the reason, when the Keras wrapper could not be built"),
    CheckSpec("benchmark_stability_<runtime>", "warning", "benchmark, benchmark-`<target>`",
              "every measurement's last 3 window means within 10 % of their mean"),
    CheckSpec("benchmark_budget_<runtime>", "warning", "benchmark, benchmark-`<target>`",
              "the time budget measured every batch size planned"),
    CheckSpec("benchmark_sweep_<runtime>", "error", "benchmark, benchmark-`<target>`",
              "skipped, with the reason, when the signature has no batch dimension (a scalar input, the others of fixed "
              "shape): measured once at the declared shapes, as batch size 1"),
    CheckSpec("benchmark_gpu_<runtime>", "error", "benchmark, benchmark-`<target>`",
              "measured on the GPU where one is present (skipped or a warning, with the reason, where not)"),
    CheckSpec("benchmark_<runtime>", "error or warning", "benchmark-`<target>`",
              "skipped, with the reason, when nothing could be timed; failed when the runtime refuses a batch the "
              "signature accepts (a warning for an optional target)"),
    CheckSpec("<target>_conversion", "error or warning", "export-`<target>`",
              "the target's converter made a file that passes its checks (a warning for an optional target)"),
    CheckSpec("<target>_parity", "error or warning", "compare-`<target>`",
              "every runtime of the target, on every device, met the target's criteria against TensorFlow, naming the "
              "outputs that missed (a warning for an optional target)"),
    CheckSpec("<format>_<check>", "error", "export-`<target>`",
              "the target's own checks of its file, as its declaration lists them (`file_checks`): {file_checks}"),
]


def spec_of(name: str) -> CheckSpec | None:
    """The entry of a check name: its own, else the family it belongs to."""
    exact = next((spec for spec in CATALOGUE if spec.name == name), None)
    return exact or next((spec for spec in CATALOGUE if "<" in spec.name and spec.matches(name)), None)


def markdown_table() -> str:
    rows = ["| check | severity | stage | rule |", "| --- | --- | --- | --- |"]
    rows += [f"| `{spec.name}` | {spec.severity} | {spec.stage} | {spec.described} |" for spec in CATALOGUE]
    return "\n".join(rows)
