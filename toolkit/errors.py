"""Typed errors. Each carries the exit code the CLI returns for it.

Exit codes (documented in README):

    0  success
    1  internal error (a bug: a traceback is printed)
    2  usage error (bad flag or value, refusing to overwrite without --force)
    3  invalid or corrupt artifact or data (missing/truncated/edited file, wrong format)
    4  a gate failed (parity, or `toolkit gate` against a baseline)
    5  I/O error (cannot write, disk full, permission denied)
    6  device or runtime unavailable (e.g. --device cuda without a usable GPU)
    7  partial: some rows (a variant on a runtime) or variants failed, each listed with its reason;
       everything else was measured and written
"""

from __future__ import annotations


def message_lines(exc: BaseException | str) -> list[str]:
    """The non-empty lines of an exception's message (or of a text), stripped."""
    text = exc if isinstance(exc, str) else str(exc)
    return [line.strip() for line in text.strip().splitlines() if line.strip()]


# Lines that say where a library raised, not what went wrong (OpenVINO: "Exception from src/...:").
_WHERE = ("Exception from src/", "Exception from ", "Traceback ")


def first_line(exc: BaseException | str, limit: int | None = 300) -> str:
    """One line that says what went wrong: the first line of the message that is not a location
    (OpenVINO's messages start with "Exception from src/...cpp:117:" lines), never empty (the
    exception's type name when it has no message), cut to ``limit`` characters. The one helper for
    every error path that shows a library's exception in one line."""
    lines = message_lines(exc)
    informative = [line for line in lines if not line.startswith(_WHERE)]
    line = (informative or lines or [type(exc).__name__ if not isinstance(exc, str) else ""])[0]
    if len(informative) > 1 and line.endswith(":"):
        # the line stops at a nested location (OpenVINO: "... CALLBACK HAS THROWN: Exception from x.cpp:66:"):
        # the reason is the last line ("Accessing out-of-range dimension")
        line = f"{line} ... {informative[-1]}"
    if limit is not None and len(line) > limit:
        line = line[: limit - 3] + "..."
    return line


def whole_message(exc: BaseException | str, limit: int = 4000) -> str:
    """The whole message (its last ``limit`` characters), lines joined by " | ": for JSON records
    that must keep a runtime's full reason."""
    text = " | ".join(message_lines(exc)) or (type(exc).__name__ if not isinstance(exc, str) else "")
    return text if len(text) <= limit else "..." + text[-limit:]


def failure_record(stage: str, exc: BaseException, **where) -> dict:
    """What could not be done, as every command records it (export's ``failed``, parity's and bench's failed
    rows): where (``where``: variant, format, runtime, batch, ...), the stage, one line of reason (a library's
    exception keeps its type name) and the whole message as ``detail``."""
    reason = first_line(exc, None)
    return {**where, "stage": stage,
            "reason": reason if isinstance(exc, ToolkitError) else f"{type(exc).__name__}: {reason}",
            "detail": getattr(exc, "detail", None) or whole_message(exc)}


class ToolkitError(Exception):
    """Base class for errors a user can cause. The CLI prints one line, no traceback. ``detail``
    keeps a library's whole message where ``message`` shows one line of it."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None, detail: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.detail = detail

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
        super().__init__(message, hint=hint, detail=detail)
        self.ops = ops or []


class NotReadableHere(DataError):
    """A well-formed file that a runtime reading another format's files (OpenVINO's ONNX and TFLite readers) has
    no reader for: a limit of that second reader, not of the file, which its own runtime runs. Bench records the
    group as skipped with this reason."""


class PartialError(ToolkitError):
    """Some rows (a variant on a runtime) or variants failed; each is recorded with its reason and
    everything else was measured and written (bench, parity, gate, export)."""

    exit_code = 7


class PartialExportError(PartialError):
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
    7: "partial: some rows or variants failed (each listed with its reason); everything else was written",
}
