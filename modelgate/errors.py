"""Errors that carry a message meant for the user, first line first."""


class ModelgateError(Exception):
    """Bad input or a model that cannot be validated: reported as one clear line, never a traceback."""


class NotASavedModel(ModelgateError):
    pass


class SignatureNotFound(ModelgateError):
    pass


class InputsError(ModelgateError):
    pass


class UnsafeModel(ModelgateError):
    pass


class ModelRunError(ModelgateError):
    """Model code failed in its child process: an exception, a time-out, a memory kill or a signal."""


class OnnxConversionError(ModelgateError):
    """A conversion that produced no usable file; `conversion` keeps what it found (ops, checks, messages)."""

    def __init__(self, message: str, conversion=None):
        super().__init__(message)
        self.conversion = conversion
