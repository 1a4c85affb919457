"""Errors a user can fix: each carries one paragraph naming the key or file and what was expected."""


class StageError(RuntimeError):
    """Base: printed without a traceback, recorded for the repro summary."""


class ParamsError(StageError, ValueError):
    """A params.yaml value is missing, unknown, of the wrong type or out of range."""


class InputError(StageError):
    """A stage's input file or folder is missing or malformed."""


class DatasetError(StageError):
    """A dataset file could not be had, or failed verification."""


class DatasetUnavailable(DatasetError):
    """No source could serve a file: no network and no (matching) mirror copy."""
