"""The pyfunc flavor of a version modelgate registered: `mlflow.pyfunc.load_model("models:/NAME/N")` loads the
SavedModel with TensorFlow and `predict` runs the signature modelgate validated, returning its outputs by name:
a TF2 signature function, or for a TF1 graph a TF1 Session fed and fetched by the signature's tensor names (as TF
Serving and modelgate's reference runtime run it; TF2's loader refuses reference-typed variables).

This file travels inside the version (code/modelgate_pyfunc.py, which MLflow puts on sys.path before it imports
the loader), so it imports nothing of modelgate: only NumPy, and TensorFlow once a model is loaded. Loading runs
the model's code: load a version where its code may run, never in modelgate's flow process.
"""

from __future__ import annotations

import importlib

import numpy as np


class SavedModelSignature:
    """One signature of a SavedModel, called with numpy arrays by input name (a single array for a signature of one
    input, as MLflow passes it), returning numpy arrays by output name."""

    def __init__(self, path: str, signature_key: str, tags: list[str] | None = None, op_libraries: list[str] = ()):
        import tensorflow as tf

        for module in op_libraries:  # packages that register the model's custom ops (tensorflow_text, ...)
            importlib.import_module(module)
        self._tf = tf
        self._loaded = tf.saved_model.load(path, tags=tags or None)
        if signature_key not in self._loaded.signatures:
            raise KeyError(f"{path}: no signature {signature_key!r} (it has {', '.join(self._loaded.signatures)})")
        self._function = self._loaded.signatures[signature_key]
        self._inputs = self._function.structured_input_signature[1]

    def predict(self, data, params=None) -> dict[str, np.ndarray]:
        data = _by_input_name(data, self._inputs)
        feeds = {name: self._tf.constant(np.asarray(value), dtype=self._inputs[name].dtype)
                 for name, value in data.items()}
        return {name: value.numpy() for name, value in self._function(**feeds).items()}


def _by_input_name(data, inputs) -> dict:
    """What predict was given as arrays by input name: a dict as it is; a DataFrame or one array for a signature
    of one input."""
    if hasattr(data, "to_numpy") and not isinstance(data, dict):  # a DataFrame
        data = data.to_numpy()
    if not isinstance(data, dict):
        if len(inputs) != 1:
            raise ValueError(f"this signature takes {len(inputs)} inputs ({', '.join(inputs)}): "
                             "pass a dict of arrays by input name")
        data = {next(iter(inputs)): data}
    unknown = sorted(set(data) - set(inputs))
    if unknown:
        raise ValueError(f"unknown input {', '.join(unknown)}; the signature takes {', '.join(inputs)}")
    return data


class SessionSignature:
    """One signature of a TF1 graph SavedModel, run in a TF1 Session; same calls as SavedModelSignature."""

    def __init__(self, path: str, signature_key: str, tags: list[str] | None = None, op_libraries: list[str] = ()):
        import tensorflow as tf

        for module in op_libraries:
            importlib.import_module(module)
        config = tf.compat.v1.ConfigProto(allow_soft_placement=True)
        self._session = tf.compat.v1.Session(graph=tf.Graph(), config=config)
        with self._session.graph.as_default():
            meta_graph = tf.compat.v1.saved_model.load(self._session, tags or ["serve"], path)
        if signature_key not in meta_graph.signature_def:
            raise KeyError(f"{path}: no signature {signature_key!r} (it has {', '.join(meta_graph.signature_def)})")
        signature = meta_graph.signature_def[signature_key]
        sparse = [name for name, info in signature.inputs.items() if info.WhichOneof("encoding") == "coo_sparse"]
        if sparse:
            raise ValueError(f"sparse input {', '.join(sparse)}: feed this signature through a TF1 Session directly")
        self._inputs = {name: info.name for name, info in signature.inputs.items()}
        self._fetches = {name: info.name for name, info in signature.outputs.items()}

    def predict(self, data, params=None) -> dict[str, np.ndarray]:
        data = _by_input_name(data, self._inputs)
        outputs = self._session.run(self._fetches, {self._inputs[name]: np.asarray(value) for name, value in data.items()})
        return {name: np.asarray(value) for name, value in outputs.items()}


def _load_pyfunc(path: str, model_config: dict | None = None) -> SavedModelSignature | SessionSignature:
    """MLflow's loader hook: path is the SavedModel's folder (the flavor's data), model_config the flavor's
    `model_config` (signature_key, tags, op_libraries, and runner: "session" for a TF1 graph)."""
    config = model_config or {}
    runner = SessionSignature if config.get("runner") == "session" else SavedModelSignature
    return runner(path, config.get("signature_key", "serving_default"), config.get("tags"),
                  config.get("op_libraries") or [])
