"""Rules on what a signature declares, checked from the protobuf alone: dtypes and ranks, a dynamic batch
dimension, output names, tensor names; an expected-contract file; compatibility with a previous version.

Each rule is one named Check; every problem says what was expected and what was found.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from modelgate.description import MetaGraphInfo, SignatureSpec, TensorSpec
from modelgate.errors import ModelgateError
from modelgate.numerics.checks import rule
from modelgate.numerics.inputs import no_batch_dimension
from modelgate.report import Check

# Names that exporters make up when the model did not name its outputs (Keras 3 export, tf.function's
# tuple returns, TF1 graphs saved by node name).
GENERATED_OUTPUT_NAME = re.compile(r"^(output_\d+|Identity(_\d+)?|(Stateful)?PartitionedCall(_\d+)?|\d+)$")


class ContractError(ModelgateError):
    pass


def describe(spec: TensorSpec | None) -> str:
    if spec is None:
        return "absent"
    return f"{spec.dtype} {'unknown rank' if spec.shape is None else spec.shape}"


def _tensors(signature: SignatureSpec):
    for kind, tensors in (("input", signature.inputs), ("output", signature.outputs)):
        for name, spec in tensors.items():
            yield kind, name, spec


def check_dtypes(signature: SignatureSpec) -> Check:
    problems = [
        f"{kind} '{name}': expected a TensorFlow dtype, found {spec.dtype}"
        for kind, name, spec in _tensors(signature)
        if spec.dtype.startswith("unknown")
    ]
    notes = [
        f"{kind} '{name}' is declared {spec.declared_dtype}, reported as {spec.dtype}"
        for kind, name, spec in _tensors(signature)
        if spec.declared_dtype
    ]
    return rule("tensor_dtypes", "error", problems, "every input and output has a known dtype", notes)


def check_declared_shapes(signature: SignatureSpec) -> Check:
    """A TF1 signature's declared shapes are metadata a Session and TF Serving never check; where they
    disagree with the graph, the graph's are the ones used, and callers reading the metadata are misled."""
    problems = [
        f"{kind} '{name}': expected the declared shape {spec.declared_shape} to be the graph's, found {spec.shape} "
        "in the graph (used for inputs and output checks, as a TF1 Session runs it)"
        for kind, name, spec in _tensors(signature)
        if spec.declared_shape is not None
    ]
    return rule("declared_shapes", "warning", problems, "every declared shape agrees with the graph")


def check_known_rank(signature: SignatureSpec) -> Check:
    problems = [
        f"{kind} '{name}': expected a known rank, found unknown rank (any shape accepted)"
        for kind, name, spec in _tensors(signature)
        if spec.shape is None
    ]
    return rule("known_rank", "warning", problems, "every input and output has a known rank")


def check_dynamic_batch(signature: SignatureSpec) -> Check:
    if not signature.inputs:
        return Check(name="dynamic_batch", status="skipped", message="the signature takes no inputs")
    if unbatched := no_batch_dimension(signature):
        return Check(name="dynamic_batch", status="skipped", message=f"{unbatched}: it takes whole values, not batches")
    problems = [
        f"input '{name}': expected a dynamic batch dimension (None), found fixed size {spec.shape[0]}"
        for name, spec in signature.inputs.items()
        if spec.shape and spec.shape[0] is not None
    ]
    notes = [f"input '{name}' is a scalar" for name, spec in signature.inputs.items() if spec.shape == []]
    return rule("dynamic_batch", "warning", problems, "every batched input has a dynamic batch dimension", notes)


def check_output_names(signature: SignatureSpec) -> Check:
    problems = [
        f"output '{name}': expected a name that says what it holds, found a generated one"
        for name in signature.outputs
        if GENERATED_OUTPUT_NAME.match(name)
    ]
    return rule("meaningful_output_names", "warning", problems, f"outputs {', '.join(signature.outputs) or 'none'}")


def check_unique_tensor_names(signature: SignatureSpec) -> Check:
    problems = [
        f"'{name}': expected an input or an output, found both names used"
        for name in sorted(set(signature.inputs) & set(signature.outputs))
    ]
    for kind, tensors in (("inputs", signature.inputs), ("outputs", signature.outputs)):
        bound: dict[str, list[str]] = {}
        for name, spec in tensors.items():
            if spec.tensor_name:
                bound.setdefault(spec.tensor_name, []).append(name)
        problems += [
            f"{kind} {', '.join(names)}: expected one graph tensor each, found all bound to {tensor}"
            for tensor, names in bound.items()
            if len(names) > 1
        ]
    return rule("unique_tensor_names", "error", problems, "every input and output name is unique and bound to its own tensor")


def signature_rules(signature: SignatureSpec) -> list[Check]:
    return [
        check_dtypes(signature), check_declared_shapes(signature), check_known_rank(signature),
        check_dynamic_batch(signature),
        check_output_names(signature), check_unique_tensor_names(signature),
    ]


class ContractTensor(BaseModel):
    """Omit dtype or shape to leave it unchecked; shape null expects an unknown rank, a null dimension a
    dynamic one."""

    model_config = ConfigDict(extra="forbid")
    dtype: str | None = None
    shape: list[int | None] | None = None


class Contract(BaseModel):
    model_config = ConfigDict(extra="forbid")
    signature: str | None = None
    inputs: dict[str, ContractTensor]
    outputs: dict[str, ContractTensor] = {}


def load_contract(path: str | Path) -> Contract:
    """A contract file, YAML or JSON (JSON is YAML too)."""
    path = Path(path)
    if not path.is_file():
        raise ContractError(f"contract file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ContractError(f"contract file {path} is neither YAML nor JSON ({str(exc).splitlines()[0]})") from exc
    try:
        return Contract.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(map(str, first["loc"])) or "top level"
        raise ContractError(
            f"contract file {path}: {where}: {first['msg']} (expected {{inputs: {{name: {{dtype, shape}}}}, "
            f"outputs: ...}}, found {json.dumps(data)[:200]})"
        ) from exc


# The other names tf.dtypes.as_dtype takes for a dtype; spelled out so that checking a contract needs no TensorFlow.
DTYPE_ALIASES = {"half": "float16", "float": "float32", "double": "float64"}


def _normalized_dtype(name: str) -> str:
    return DTYPE_ALIASES.get(name, name)


def _contract_problems(kind: str, expected: dict[str, ContractTensor], found: dict[str, TensorSpec]) -> list[str]:
    problems = []
    for name, want in expected.items():
        have = found.get(name)
        if have is None:
            problems.append(f"{kind} '{name}': expected, found no such {kind} (the signature has "
                            f"{', '.join(found) or 'none'})")
            continue
        if want.dtype is not None and _normalized_dtype(want.dtype) != have.dtype:
            problems.append(f"{kind} '{name}': expected dtype {want.dtype}, found {have.dtype}")
        if "shape" in want.model_fields_set and want.shape != have.shape:
            problems.append(
                f"{kind} '{name}': expected shape {'unknown rank' if want.shape is None else want.shape}, "
                f"found {'unknown rank' if have.shape is None else have.shape} (None = dynamic)"
            )
    return problems


def check_contract(signature: SignatureSpec, contract: Contract, source: str) -> Check:
    problems = []
    if contract.signature and contract.signature != signature.key:
        problems.append(f"expected signature '{contract.signature}', found '{signature.key}' validated")
    problems += _contract_problems("input", contract.inputs, signature.inputs)
    problems += [
        f"input '{name}': expected no such input (the contract has {', '.join(contract.inputs) or 'none'}), "
        f"found {describe(spec)}"
        for name, spec in signature.inputs.items()
        if name not in contract.inputs
    ]
    problems += _contract_problems("output", contract.outputs, signature.outputs)
    notes = [
        f"output '{name}' ({describe(spec)}) is not in the contract"
        for name, spec in signature.outputs.items()
        if contract.outputs and name not in contract.outputs
    ]
    return rule("contract", "error", problems, f"the signature matches {source}", notes)


def _dimension_change(kind: str, name: str, axis: int, before: int | None, after: int | None) -> tuple[bool, str]:
    """(breaking, description) for one dimension that differs. Inputs may widen (fixed to dynamic) and
    outputs may narrow (dynamic to fixed) without breaking a caller; anything else breaks one."""
    text = (f"{kind} '{name}' dimension {axis}: expected {'dynamic' if before is None else before} as before, "
            f"found {'dynamic' if after is None else after}")
    compatible = (after is None) if kind == "input" else (before is None)
    return not compatible, text


def _tensor_changes(kind: str, key: str, before: dict[str, TensorSpec], after: dict[str, TensorSpec]):
    for name in sorted(set(before) | set(after)):
        old, new = before.get(name), after.get(name)
        where = f"signature '{key}' {kind} '{name}'"
        if new is None:
            yield True, (f"{where} removed or renamed: expected {describe(old)} as before, found no such {kind} "
                         f"(now {', '.join(after) or 'none'})")
        elif old is None:
            # A caller of the previous version does not send a new input; it can ignore a new output.
            yield kind == "input", f"{where} is new: {describe(new)}"
        elif old.dtype != new.dtype:
            yield True, f"{where}: expected dtype {old.dtype} as before, found {new.dtype}"
        elif (old.shape is None) != (new.shape is None) or (old.shape is not None and len(old.shape) != len(new.shape)):
            yield True, (f"{where}: expected rank {'unknown' if old.shape is None else len(old.shape)} as before, "
                         f"found {'unknown' if new.shape is None else len(new.shape)}")
        else:
            for axis, (a, b) in enumerate(zip(old.shape or [], new.shape or [])):
                if a != b:
                    breaking, text = _dimension_change(kind, name, axis, a, b)
                    yield breaking, f"signature '{key}' {text}"


def check_compatibility(previous: MetaGraphInfo, current: MetaGraphInfo, source: str) -> Check:
    """Every signature of the previous version against this one: what a caller of the previous one meets."""
    breaking, notes = [], []
    for key in sorted(set(previous.signatures) | set(current.signatures)):
        old, new = previous.signatures.get(key), current.signatures.get(key)
        if new is None:
            breaking.append(f"signature '{key}' removed: expected as before, found signatures "
                            f"{', '.join(sorted(current.signatures)) or 'none'}")
            continue
        if old is None:
            notes.append(f"signature '{key}' is new")
            continue
        for is_breaking, text in [*_tensor_changes("input", key, old.inputs, new.inputs),
                                  *_tensor_changes("output", key, old.outputs, new.outputs)]:
            (breaking if is_breaking else notes).append(text + ("" if is_breaking else " (compatible)"))
    return rule("signature_compatibility", "error", breaking, f"compatible with {source}", notes)
