"""Typed errors. Each carries the exit code the CLI returns for it.

Exit codes (documented in README):

    0  success
    1  internal error (a bug: a traceback is printed)
    2  usage error (bad flag or value, refusing to overwrite without --force)
    3  invalid or corrupt artifact or data (missing/truncated/edited file, wrong format)
    4  a gate failed (parity, or `toolkit gate` against a baseline)
    5  I/O error (cannot write, disk full, permission denied)
    6  device or runtime unavailable (e.g. --device cuda without a usable GPU)
"""

from __future__ import annotations


class ToolkitError(Exception):
    """Base class for errors a user can cause. The CLI prints one line, no traceback."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} ({self.hint})"


class UsageError(ToolkitError):
    exit_code = 2


class DataError(ToolkitError):
    """Missing, corrupt or inconsistent data or artifact files."""

    exit_code = 3


class ConversionError(DataError):
    """A format cannot take the model: an op it has no kernel or mapping for, a converter failure.
    ``ops`` names the unsupported operators when the converter said which."""

    def __init__(self, message: str, *, ops: list[str] | None = None, detail: str | None = None,
                 hint: str | None = None):
        super().__init__(message, hint=hint)
        self.ops = ops or []
        self.detail = detail


class PartialExportError(DataError):
    """Some variants were exported and committed, others could not be made (listed in the manifest)."""


class GateError(ToolkitError):
    exit_code = 4


class WriteError(ToolkitError):
    exit_code = 5


class DeviceUnavailableError(ToolkitError):
    exit_code = 6


EXIT_CODES = {
    0: "success",
    1: "internal error (a bug; please report it with the traceback)",
    2: "usage error: bad flag or value, or refusing to overwrite without --force",
    3: "invalid or corrupt artifact or data",
    4: "a gate failed (a parity gate, or a `toolkit gate` check against a baseline)",
    5: "I/O error: cannot write the output",
    6: "device or runtime unavailable",
}
