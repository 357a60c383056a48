"""Errors that carry a message meant for the user, first line first."""


class ModelgateError(Exception):
    """Bad input or a model that cannot be validated: reported as one clear line, never a traceback."""


class NotASavedModel(ModelgateError):
    pass


class SignatureNotFound(ModelgateError):
    pass


class InputsError(ModelgateError):
    pass


class ModelRejected(ModelgateError):
    """The model was judged and misses a requirement: the validation fails (exit 1) on the named check.

    The verdict rule: `error` only when modelgate could not judge (not a SavedModel, bad usage, a limit hit,
    a tool crash, ops this environment lacks); a model that cannot load, breaks at a declared batch size, is
    refused as unsafe or cannot be converted as required is `failed`, with the check that says why.
    """

    def __init__(self, check: str, message: str, severity: str = "error"):
        super().__init__(message)
        self.check = check
        self.severity = severity  # "warning" where the request makes this requirement report-only

    def __reduce__(self):
        return type(self), (self.check, str(self), self.severity)


class UnsafeModel(ModelRejected):
    """Refused before any model code runs: the graph could touch files, run Python or reach the network."""

    def __init__(self, message: str, check: str = "op_safety"):
        super().__init__(check, message)

    def __reduce__(self):
        return type(self), (str(self), self.check)


class MissingOps(ModelgateError):
    """The model uses ops this environment has not registered (a custom op library is missing): no judgement."""


class ModelRunError(ModelgateError):
    """Model code failed in its child process: an exception, a time-out, a memory kill or a signal."""


class SignatureFailed(ModelRunError):
    """The model ran and its signature raised; `reason` is TensorFlow's, in one line."""

    def __init__(self, reason: str):
        super().__init__(f"the signature failed: {reason}")
        self.reason = reason

    def __reduce__(self):
        return type(self), (self.reason,)


class ConversionFailed(ModelRejected):
    """A conversion that produced no usable file (unsupported ops, a checker rejection, the converter giving
    up): the model misses that target's requirement. `conversion` keeps what it found (ops, checks, messages)."""

    def __init__(self, check: str, message: str, conversion=None, severity: str = "error"):
        super().__init__(check, message, severity)
        self.conversion = conversion

    def __reduce__(self):
        return type(self), (self.check, str(self), self.conversion, self.severity)


class RuntimeRefused(ModelgateError):
    """A target's runtime raised on inputs the signature accepts (a batch size the converted file cannot take):
    the artifact does not serve what the model serves, a verdict on the target."""
