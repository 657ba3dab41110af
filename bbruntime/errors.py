"""One exception family for everything a user can get wrong.

The CLI prints a :class:`BBExportError` as one line and exits with its ``exit_code``; any other
exception is a bug in bbexport and keeps its traceback.
"""

import signal


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


class ImageError(BBExportError):
    """One image file that cannot be read as a picture (corrupt, truncated, too large to decode)."""


class SourceError(BBExportError):
    """A source infer.py cannot read: a missing file or folder, a glob matching nothing, a video or camera
    that does not open."""


class ValidationFailed(BBExportError):
    """An artifact's numbers miss their budget; the message carries the numbers."""

    exit_code = 1


class MissingDependencyError(BBExportError):
    """An optional backend (TensorRT, CUDA) is not available on this machine."""

    exit_code = 3


# Exit codes of the bbexport command: 0 done; 1 a drift budget missed (or a report row failed); 2 bad
# input (or a full disk); 3 a backend missing here; 130 interrupted (SIGINT, Ctrl-C); 143 terminated (SIGTERM).
EXIT_INTERRUPTED = {signal.SIGINT: 130, signal.SIGTERM: 143}


class Interrupted(BaseException):
    """SIGTERM arrived (SIGINT arrives as KeyboardInterrupt): unwinds the same way, so every staging
    folder is removed on the way out. Not a BBExportError: nothing was wrong with the input."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.exit_code = EXIT_INTERRUPTED.get(signum, 128 + signum)


def first_line(error: BaseException | str, limit: int = 240) -> str:
    """The first line of an exception's message (or its type name), for one-line reports."""
    text = str(error).strip()
    return text.splitlines()[0][:limit] if text else type(error).__name__
