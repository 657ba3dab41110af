"""One exception family for everything a user can get wrong.

The CLI prints a :class:`BBExportError` as one line and exits with its ``exit_code``; any other
exception is a bug in bbexport and keeps its traceback.
"""


class BBExportError(Exception):
    """A problem with the user's input or environment, reported as one line."""

    exit_code = 2


class UnknownModelError(BBExportError):
    pass


class InputSizeError(BBExportError):
    pass


class WeightsError(BBExportError):
    pass


class OpsetError(BBExportError):
    pass


class OutputPathError(BBExportError):
    pass


class ExportError(BBExportError):
    """The exporter or checker rejected the model: says which op or check."""


class CalibrationDataError(BBExportError):
    pass


class ValidationFailed(BBExportError):
    """An artifact's numbers miss their budget; the message carries the numbers."""

    exit_code = 1


class MissingDependencyError(BBExportError):
    """An optional backend (TensorRT, CUDA) is not available on this machine."""

    exit_code = 3


def first_line(error: BaseException | str, limit: int = 240) -> str:
    """The first line of an exception's message (or its type name), for one-line reports."""
    text = str(error).strip()
    return text.splitlines()[0][:limit] if text else type(error).__name__
