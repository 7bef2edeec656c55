"""Exceptions of the workbench.

Every error a user can cause is a :class:`WorkbenchError`: the CLI prints its message on one line
and exits with code 2, never a traceback. Each subclass names the part that refused the input, so
API users can catch exactly what they expect. Modules refine them: ``growth.GrowthError`` is a
:class:`ModelError`; ``selection.SelectionError`` and ``selection.mates.MatesError`` are
:class:`ConfigError` s.
"""


class WorkbenchError(ValueError):
    """Base class of every user-facing error (bad parameters, bad data, bad files)."""


class ConfigError(WorkbenchError):
    """A parameter is unknown, ill-typed or out of range."""


class CorpusError(WorkbenchError):
    """A corpus spec or file cannot be read or is empty."""


class RunError(WorkbenchError):
    """A run directory is missing, corrupted, already exists, or is not writable."""


class CheckpointError(RunError):
    """A checkpoint is missing or cannot be loaded."""


class ModelError(WorkbenchError):
    """A model preset, size or vocabulary does not fit."""
