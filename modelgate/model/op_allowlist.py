"""Which ops a model may run: TensorFlow's computation ops, derived from its op registry, plus a short reviewed
set of stateful ones that real models need. Everything else is refused by the op scan (modelgate.model.op_scan).

A custom op library (tensorflow_text, say) registers its ops when its Python package is imported; the scan
knows them only for a request that names the package (`--op-library`), since only then do its model
processes import it too.
"""

from __future__ import annotations

import importlib
import os
import re

from modelgate.errors import ModelgateError
from modelgate.execution.quiet import import_tensorflow

OP_LIBRARIES_VARIABLE = "MODELGATE_OP_LIBRARIES"

# A string input or attribute with one of these names is a file, a directory, a network address or a
# serialized program: an op taking one is no computation, whatever its statefulness says (ReadFile and
# MatchingFiles are registered as stateless).
FILE_LIKE_NAME = re.compile(
    r"file|path|prefix|(^|_)dir(ectory)?(_|$)|url|address|protocol|data_source|memory_region|descriptor|graph_def"
    r"|module",
    re.IGNORECASE,
)

# Ops that are no computation, reviewed by hand, with why: stateless ones the rules above would let in, and
# stateful ones whose reason is worth naming.
NOT_COMPUTATION = {
    **dict.fromkeys(("PyFunc", "PyFuncStateless", "EagerPyFunc"), "runs Python code"),
    "MatchingFiles": "lists files",
    "XlaCustomCall": "calls native code by name",
    "XlaCustomCallV2": "calls native code by name",
    **dict.fromkeys(
        ("DTensorAllGather", "DTensorAllReduce", "DTensorAllScatter", "DTensorAllToAll", "DTensorReduceScatter",
         "XlaAllReduce", "XlaReduceScatter"),
        "exchanges tensors with other devices or hosts",
    ),
}

# Ops that take a serialized graph or program: what they run is hidden from any scan of the model's graph.
SERIALIZED_PROGRAM_OPS = frozenset(
    {"DatasetFromGraph", "DeserializeIterator", "MlirPassthroughOp", "XlaCallModule", "_XlaHostComputeMlir",
     "_TPUCompileMlir"}
)

TABLE_FILE_INITIALIZERS = frozenset({"InitializeTableFromTextFile", "InitializeTableFromTextFileV2"})
CHECKPOINT_RESTORES = frozenset({"RestoreV2", "Restore", "RestoreSlice"})
CHECKPOINT_WRITES = frozenset({"SaveV2", "Save", "SaveSlices", "MergeV2Checkpoints"})

# The stateful ops real models need, reviewed one by one. The op scan holds the one-form ones (PrintV2,
# table initializers from files, restores) to their rules besides.
REVIEWED_STATEFUL_OPS = frozenset({
    # calls and control flow: the functions they run are walked and scanned like any other
    "StatefulPartitionedCall", "If", "While", "Case",
    # variables: handles, reads and writes of the model's own state
    "VarHandleOp", "ReadVariableOp", "AssignVariableOp", "AssignAddVariableOp", "AssignSubVariableOp",
    "VarIsInitializedOp", "VariableShape", "DestroyResourceOp", "DisableCopyOnRead", "Variable", "VariableV2",
    "ResourceGather", "ResourceGatherNd", "ResourceScatterAdd", "ResourceScatterSub", "ResourceScatterMul",
    "ResourceScatterDiv", "ResourceScatterMin", "ResourceScatterMax", "ResourceScatterUpdate",
    "ResourceScatterNdAdd", "ResourceScatterNdSub", "ResourceScatterNdMin", "ResourceScatterNdMax",
    "ResourceScatterNdUpdate", "ResourceStridedSliceAssign",
    # random numbers
    "RandomUniform", "RandomUniformInt", "RandomStandardNormal", "TruncatedNormal", "ParameterizedTruncatedNormal",
    "RandomShuffle", "RandomGamma", "RandomPoisson", "RandomPoissonV2", "Multinomial", "RandomCrop",
    "NonDeterministicInts", "StatefulUniform", "StatefulUniformInt", "StatefulUniformFullInt",
    "StatefulStandardNormal", "StatefulStandardNormalV2", "StatefulTruncatedNormal", "StatefulRandomBinomial",
    "RngSkip", "RngReadAndSkip", "StatelessRandomGetAlg", "SampleDistortedBoundingBox",
    "SampleDistortedBoundingBoxV2", "AnonymousSeedGenerator", "DummySeedGenerator",
    # hash tables, filled from tensors or (one form only) from the model's asset files
    "HashTable", "HashTableV2", "MutableHashTable", "MutableHashTableV2", "MutableHashTableOfTensors",
    "MutableHashTableOfTensorsV2", "MutableDenseHashTable", "MutableDenseHashTableV2", "AnonymousHashTable",
    "AnonymousMutableHashTable", "AnonymousMutableHashTableOfTensors", "AnonymousMutableDenseHashTable",
    "LookupTableFindV2", "LookupTableInsertV2", "LookupTableRemoveV2", "LookupTableSizeV2", "LookupTableExportV2",
    "LookupTableImportV2", "InitializeTableV2", "InitializeTableFromDataset", *TABLE_FILE_INITIALIZERS,
    # cuDNN's recurrent kernels and their gradients (Keras 2 RNNs keep both for GPUs; stateful for their
    # dropout and reserve space)
    "CudnnRNN", "CudnnRNNV2", "CudnnRNNV3", "CudnnRNNBackprop", "CudnnRNNBackpropV2", "CudnnRNNBackpropV3",
    # TF1 while loops and dynamic RNNs
    "TensorArrayV3", "TensorArrayReadV3", "TensorArrayWriteV3", "TensorArrayGatherV3", "TensorArrayScatterV3",
    "TensorArraySizeV3", "TensorArrayCloseV3", "TensorArrayConcatV3", "TensorArraySplitV3", "TensorArrayGradV3",
    "TensorArrayGradWithShape",
    # tf.data over tensors the model holds (no file, no network): sources, iteration, reduction
    "TensorDataset", "TensorSliceDataset", "SparseTensorSliceDataset", "RangeDataset", "ReduceDataset",
    "DatasetToSingleElement", "AnonymousIteratorV3", "MakeIterator", "IteratorGetNext", "IteratorGetNextSync",
    "IteratorGetNextAsOptional", "DeleteIterator",
    # assertions and printing to the process's own streams (PrintV2: see its rule)
    "Assert", "CheckNumerics", "CheckNumericsV2", "Print", "PrintV2",
    # the loader's restore of the model's own variables (see the restore rule)
    *CHECKPOINT_RESTORES,
    # tensorflow_text: tokenizers holding their vocabulary or model in memory (registered by --op-library)
    "WordpieceTokenizeWithOffsets", "SentencepieceOp", "SentencepieceTokenizeOp", "SentencepieceTokenizeWithOffsetsOp",
    "SentencepieceDetokenizeOp", "SentencepieceVocabSizeOp", "SentencepieceIdToStringOp", "SentencepieceStringToIdOp",
})

# tensorflow_text 2.21's ops registered without its "TFText>" prefix (the older ones): with the prefixes, how
# the scan tells an op library's ops from TensorFlow's own, and names the package a model needs.
TENSORFLOW_TEXT_UNPREFIXED_OPS = frozenset({
    "CaseFoldUTF8", "ConstrainedSequence", "FastBertNormalize", "FastWordpieceTokenizeWithOffsets",
    "FindSourceOffsets", "MaxSpanningTree", "NormalizeUTF8", "NormalizeUTF8WithOffsetsMap", "PhraseTokenize",
    "RegexSplitWithOffsets", "RougeL", "SentenceFragments", "SentenceFragmentsV2", "SentencepieceDetokenizeOp",
    "SentencepieceIdToStringOp", "SentencepieceOp", "SentencepieceStringToIdOp", "SentencepieceTokenizeOp",
    "SentencepieceTokenizeWithOffsetsOp", "SentencepieceVocabSizeOp", "SplitMergeTokenizeWithOffsets",
    "TokenizerFromLogits", "UnicodeScriptTokenizeWithOffsets", "WhitespaceTokenizeWithOffsets",
    "WordpieceTokenizeWithOffsets",
})
OP_PREFIXES = {"TFText>": "tensorflow_text", "Addons>": "tensorflow_addons", "IO>": "tensorflow_io"}

# Ops each other op library registered when modelgate imported it (one imported otherwise, and not named by
# the prefixes and names above, is not told apart from TensorFlow).
_registered_by: dict[str, frozenset[str]] = {}


def registered_op_defs() -> dict:
    """Every OpDef registered in this process, by name."""
    import_tensorflow()
    from tensorflow.core.framework import op_def_pb2
    from tensorflow.python.client import pywrap_tf_session as c_api

    buffer = c_api.TF_GetAllOpList()
    try:
        return {op.name: op for op in op_def_pb2.OpList.FromString(c_api.TF_GetBuffer(buffer)).op}
    finally:
        c_api.TF_DeleteBuffer(buffer)


def file_like_arguments(op_def) -> list[str]:
    from tensorflow.core.framework import types_pb2

    names = [arg.name for arg in op_def.input_arg if arg.type == types_pb2.DT_STRING]
    names += [attr.name for attr in op_def.attr if attr.type in ("string", "list(string)")]
    return [name for name in names if FILE_LIKE_NAME.search(name)]


def why_not_computation(op_def) -> str | None:
    """None for a computation op; else what makes it something more."""
    if op_def.name in SERIALIZED_PROGRAM_OPS:
        return "runs a serialized graph or program"
    if op_def.name in NOT_COMPUTATION:
        return NOT_COMPUTATION[op_def.name]
    if file_like := file_like_arguments(op_def):
        return f"takes a file, path or address ({', '.join(file_like)})"
    if op_def.is_stateful:
        return "a stateful op outside the reviewed set"
    return None


def computation_ops() -> list[str]:
    """The derived set, sorted: what tests/model/computation_ops.txt holds for the TensorFlow of the lock."""
    return sorted(name for name, op_def in registered_op_defs().items() if why_not_computation(op_def) is None)


def lookup_op_def(op: str, op_libraries: list[str]):
    """The op's definition as the model processes of a request naming these libraries know it, or None: an op
    of a library the request does not name counts as unregistered even where something imported it here
    (keras_hub imports tensorflow_text, say), since those processes will not have it."""
    from tensorflow.python.framework import op_def_registry

    package = package_registering(op)
    if package is not None and package not in op_libraries:
        return None
    return op_def_registry.get(op)


def import_op_libraries(modules: list[str]) -> None:
    """Import each op library's Python package, which registers its ops in this process."""
    for module in modules:
        if module in _registered_by:
            continue
        before = set(registered_op_defs())
        try:
            importlib.import_module(module)
        except Exception as exc:  # any failure to import is the same usage error
            raise ModelgateError(f"--op-library {module}: cannot import it ({type(exc).__name__}: {exc})") from exc
        _registered_by[module] = frozenset(set(registered_op_defs()) - before)


def op_library_environment(modules: list[str]) -> dict[str, str]:
    """What a model process's environment carries so that it imports the request's op libraries."""
    return {OP_LIBRARIES_VARIABLE: ",".join(modules)} if modules else {}


def import_op_libraries_from_environment() -> None:
    """In a model process: the op libraries its environment names, before any model loads."""
    import_op_libraries([name for name in os.environ.get(OP_LIBRARIES_VARIABLE, "").split(",") if name])


def package_registering(op: str) -> str | None:
    """The Python package whose import would register this op, where the op's name tells."""
    for prefix, package in OP_PREFIXES.items():
        if op.startswith(prefix):
            return package
    if op in TENSORFLOW_TEXT_UNPREFIXED_OPS:
        return "tensorflow_text"
    return next((library for library, ops in _registered_by.items() if op in ops), None)


if __name__ == "__main__":
    # Regenerates tests/model/computation_ops.txt once its differences with a new TensorFlow have been reviewed.
    print("\n".join(computation_ops()))
