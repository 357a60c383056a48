"""What a SavedModel declares, as the static inspection reads it: signatures, tensors, ops."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class SparseTensorNames(BaseModel):
    indices: str
    values: str
    dense_shape: str


class TensorSpec(BaseModel):
    dtype: str
    shape: list[int | None] | None = Field(description="None for unknown rank; None entries for unknown dims.")
    declared_dtype: str | None = Field(
        default=None,
        description="The dtype as the SavedModel declares it, where it differs from dtype: a TF1 reference "
        "type such as float32_ref, whose values are plain float32.",
    )
    tensor_name: str | None = Field(default=None, description="The graph tensor the signature binds, e.g. x:0.")
    declared_shape: list[int | None] | None = Field(
        default=None,
        description="The shape as the signature declares it, where the TF1 graph's own tensor disagrees: shape "
        "is then the graph's, which a TF1 Session and TF Serving feed and return.",
    )
    sparse: SparseTensorNames | None = Field(
        default=None,
        description="A SparseTensor (TF1 coo_sparse): its component tensors. Inputs and outputs carry it dense, "
        "zeros being absent entries; runners feed it as its components.",
    )

    @property
    def rank(self) -> int | None:
        return None if self.shape is None else len(self.shape)


class ExampleFeature(BaseModel):
    """One feature of the tf.Example spec a serialized input is parsed with."""

    key: str
    kind: Literal["dense", "sparse", "ragged"]
    dtype: str = Field(description="float32, int64 or string: the kinds of list a tf.Example holds.")
    shape: list[int] = Field(default=[], description="Dense features: the shape of one example's value (-1: any).")


class InputFacts(BaseModel):
    """What the graph says about one input's values, read statically at inspection; synthesis follows it."""

    value_range: list[int] = Field(
        default=[], description="[low, high] an integer input may take: it indexes tables with high + 1 rows."
    )
    range_detail: str = Field(default="", description="The tables the input indexes, with their rows.")
    vocabulary: list[str] = Field(default=[], description="A sample of the keys of the model's string lookup tables.")
    example_features: list[ExampleFeature] = Field(
        default=[], description="A serialized tf.Example input: the features its parse op reads."
    )
    parsed_by: str = Field(default="", description="The parse op a serialized tf.Example input feeds.")


class SignatureSpec(BaseModel):
    key: str
    method_name: str
    inputs: dict[str, TensorSpec]
    outputs: dict[str, TensorSpec]
    input_facts: dict[str, InputFacts] = Field(
        default={}, description="By input name, where the graph says something about its values (tables, "
        "vocabulary, tf.Example spec)."
    )


class ReachableCode(BaseModel):
    """What one entry point (a signature, the init ops, the loader's restore, the loaded object) can run."""

    functions: list[str] = Field(description="Functions of the library it reaches, transitively.")
    ops: list[str] = Field(description="Op types of the graph nodes and functions it reaches.")


class OpFinding(BaseModel):
    """One op the scan refuses or cannot judge: where it is and what reaches it."""

    op: str
    node: str
    function: str | None = Field(description="The library function holding the node; None for the graph itself.")
    reached_from: list[str] = Field(description="Entry points that reach it: 'signature KEY', 'init', 'restore', ...")
    rule: str = ""

    def describe(self) -> str:
        where = f"function {self.function}" if self.function else "the graph"
        rule = f": {self.rule}" if self.rule else ""
        return f"{self.op} (node {self.node} in {where}, reached from {', '.join(self.reached_from)}){rule}"


class OpScan(BaseModel):
    """The default-deny scan of what loading and serving can execute (modelgate.op_scan)."""

    reachable: dict[str, ReachableCode] = {}
    refused: list[OpFinding] = Field(default=[], description="Ops outside the allowlist or breaking a one-form rule.")
    unregistered: list[OpFinding] = Field(default=[], description="Ops this TensorFlow and its op libraries lack.")


class MetaGraphInfo(BaseModel):
    tags: list[str]
    signatures: dict[str, SignatureSpec]
    ops: list[str] = Field(description="Every op type in the graph and its function library, sorted.")
    op_scan: OpScan = OpScan()
    float_precision: str = Field(
        default="float32", description="The lowest float precision an op computes in: float32, float16 or bfloat16."
    )
    devices: list[str] = Field(
        default=[], description="The devices the graph's ops were pinned to when it was exported (/device:GPU:0, "
        "...); loaded with soft placement, as TF Serving does, they run where this machine can."
    )
    functions: list[str] = Field(
        default=[], description="The tf.functions TF2's loader restores, by their path in the saved object graph "
        "(none in a TF1 graph): what a SavedModel without signatures still holds."
    )
