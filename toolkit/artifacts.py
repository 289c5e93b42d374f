"""Artifacts and the manifest that describes them; atomic writes.

Layout of an export directory (default ``exports/``)::

    model.keras              the trained model (``toolkit train``)
    train.json               its training record
    manifest.json            the export's table of contents, written last
    artifacts-<id>/          the files of the export the manifest points to
        tflite.tflite, tflite-int8.tflite, onnx.onnx, ...

Why a generation directory: an export is committed by one atomic rename of manifest.json.
Files of a new export are built in ``.staging-<id>/``, validated, renamed to
``artifacts-<id>/``, and only then is the manifest replaced. Until that moment the previous
manifest and every file it names are untouched, so an export that fails, is killed or runs
out of disk leaves the previous export byte-identical. Leftover staging and unreferenced
generation directories are removed by the next export.

Jobs side by side (CI runs them): readers (parity, bench, verify, footprint, diagnose, the report)
hold a shared advisory lock (flock) on the generation directory they read for as long as they read
it, and an export removes an old generation only if it can lock that directory exclusively, so
readers finish on the generation they started with. Writers are serialised by an exclusive lock on
the export directory itself: a second export waits for the first and then replaces it. The locks
are on the directories, so no lock file is ever left behind.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import sys
import tempfile
import uuid
from pathlib import Path

from toolkit import schema
from toolkit.errors import DataError, UsageError, WriteError
from toolkit.provenance import sha256_file

MANIFEST = schema.MANIFEST
SCHEMA_VERSION = schema.VERSIONS[schema.MANIFEST]
STAGING_PREFIX = ".staging-"
GENERATION_PREFIX = "artifacts-"
TRASH_PREFIX = ".trash-"

try:
    import fcntl
except ImportError:  # no advisory locks on this platform: jobs side by side are not guarded
    fcntl = None


def _flock(fd: int, exclusive: bool, wait: bool) -> bool:
    if fcntl is None:
        return True
    flags = (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | (0 if wait else fcntl.LOCK_NB)
    try:
        fcntl.flock(fd, flags)
    except BlockingIOError:
        return False
    return True


@contextlib.contextmanager
def writing(exports: Path, verbose: bool = True):
    """Serialise writers of an export directory: a second export waits for the first. When the
    directory did not exist and the block fails, the directories made for it are removed again
    (when nothing was left in them): a failed export into a new directory leaves nothing behind."""
    exports = Path(exports)
    created = [p for p in [exports, *exports.parents] if not p.exists()]  # deepest first
    try:
        exports.mkdir(parents=True, exist_ok=True)
        fd = os.open(exports, os.O_RDONLY)
    except OSError as exc:
        raise write_error(exports, exc) from None
    try:
        if not _flock(fd, exclusive=True, wait=False):
            if verbose:
                print(f"waiting for another export into {exports} to finish", file=sys.stderr, flush=True)
            _flock(fd, exclusive=True, wait=True)
        yield
    except BaseException:
        for directory in created:
            try:
                directory.rmdir()  # only when empty: never anything a user or another writer put there
            except OSError:
                break
        raise
    finally:
        os.close(fd)  # closing releases the lock


@contextlib.contextmanager
def reading(exports: Path):
    """The manifest, with its generation directory held (shared lock) until the block ends, so that
    an export replacing the directory meanwhile does not delete the files being read."""
    exports = Path(exports)
    for _ in range(20):
        manifest = read_manifest(exports)
        gen = manifest.get("generation")
        directory = exports / f"{GENERATION_PREFIX}{gen}"
        if gen is None or not directory.is_dir():
            if gen is not None and read_manifest(exports).get("generation") != gen:
                continue  # replaced between the two reads
            yield manifest  # an export older than generations, or a broken one: verify says which
            return
        try:
            fd = os.open(directory, os.O_RDONLY)
        except FileNotFoundError:  # removed between reading the manifest and locking it
            continue
        try:
            _flock(fd, exclusive=False, wait=True)
            if directory.is_dir():  # not moved to the trash while we waited
                yield manifest
                return
        finally:
            os.close(fd)
    raise DataError(f"{exports} kept changing while it was being read", hint="retry when the export has finished")


_WRITE_ERRNOS = {
    errno.ENOSPC: "no space left on device",
    errno.EFBIG: "file size limit exceeded",
    errno.EDQUOT: "disk quota exceeded",
    errno.EACCES: "permission denied",
    errno.EROFS: "read-only file system",
    errno.EPERM: "operation not permitted",
}


def write_error(path: Path, exc: OSError) -> WriteError:
    reason = _WRITE_ERRNOS.get(exc.errno, exc.strerror or str(exc))
    return WriteError(f"cannot write {path}: {reason}")


def as_write_error(path: Path, exc: BaseException) -> WriteError | None:
    """A WriteError if ``exc`` is a failed write, also when a library wrapped the OS error in
    its own type (TensorFlow reports a full disk as ``OutOfRangeError: ... File too large``)."""
    if isinstance(exc, OSError) and exc.errno in _WRITE_ERRNOS:
        return write_error(path, exc)
    text = str(exc)
    for code, reason in _WRITE_ERRNOS.items():
        if os.strerror(code) in text:
            return WriteError(f"cannot write {path}: {reason}")
    return None


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary file beside ``path``, fsync, then rename over it."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = None
    except OSError as exc:
        raise write_error(path, exc) from None
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def atomic_savefig(fig, path: Path) -> None:
    """Save a matplotlib figure beside ``path`` and rename it into place; close the figure."""
    import matplotlib.pyplot as plt

    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp.png")
    try:
        fig.savefig(tmp, dpi=110, bbox_inches="tight")
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise write_error(path, exc) from None
    finally:
        plt.close(fig)


def _json_default(obj):
    import numpy as np

    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (Path, os.PathLike)):
        return os.fspath(obj)
    if isinstance(obj, schema.View):
        return dict(obj.raw())
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def read_json(path: Path) -> dict:
    return schema.read_json(path)


def read_manifest(exports: Path) -> dict:
    path = Path(exports) / MANIFEST
    if not path.is_file():
        raise DataError(
            f"no export found: {path} does not exist", hint=f"run `toolkit export --exports {exports}` first"
        )
    manifest = read_json(path)
    if not isinstance(manifest.get("artifacts"), list):
        raise DataError(f"{path} has no 'artifacts' list: not a toolkit manifest")
    return manifest


def artifact_path(exports: Path, entry: dict) -> Path:
    """Resolve an entry's path, refusing anything that escapes the export directory."""
    root = Path(exports).resolve()
    path = (root / entry["path"]).resolve()
    if root not in path.parents:
        raise DataError(f"manifest entry {entry.get('variant')!r} points outside {root}: {entry['path']}")
    return path


def verify_entry(exports: Path, entry: dict) -> Path:
    """Check existence, size and sha256 of one artifact (and its companion files, such as
    the header of a C source) against the manifest; return the artifact's path."""
    for companion in entry.get("companions", []):
        _verify_file(exports, {**companion, "variant": entry["variant"]})
    return _verify_file(exports, entry)


def _verify_file(exports: Path, entry: dict) -> Path:
    path = artifact_path(exports, entry)
    if not path.is_file():
        raise DataError(f"{entry['variant']}: {path} is missing", hint="re-run `toolkit export --force`")
    size = path.stat().st_size
    if size != entry["bytes"]:
        raise DataError(
            f"{entry['variant']}: {path} is {size} bytes, the manifest says {entry['bytes']}: "
            "file changed after export", hint="re-run `toolkit export --force`",
        )
    digest = sha256_file(path)
    if digest != entry["sha256"]:
        raise DataError(
            f"{entry['variant']}: sha256 of {path} is {digest[:12]}..., the manifest says "
            f"{entry['sha256'][:12]}...: file changed after export", hint="re-run `toolkit export --force`",
        )
    return path


def new_staging_dir(exports: Path, gen_id: str) -> Path:
    staging = Path(exports) / f"{STAGING_PREFIX}{gen_id}"
    try:
        staging.mkdir(parents=True)
    except OSError as exc:
        raise write_error(staging, exc) from None
    return staging


def commit_generation(exports: Path, staging: Path, gen_id: str, manifest: dict) -> Path:
    """Rename staging into place, then atomically replace the manifest (the commit point)."""
    exports = Path(exports)
    final = exports / f"{GENERATION_PREFIX}{gen_id}"
    try:
        os.rename(staging, final)
    except OSError as exc:
        raise write_error(final, exc) from None
    try:
        atomic_write_json(exports / MANIFEST, manifest)
    except WriteError:
        shutil.rmtree(final, ignore_errors=True)
        raise
    point_current(exports, final.name)
    return final


CURRENT = "current"  # DIR/current -> the live generation: a path to ship from that does not change


def _copied_current(exports: Path) -> Path | None:
    """``DIR/current`` when it is a real directory rather than the link (an export copied with
    ``shutil.copytree`` or ``cp -rL`` turns the link into a copy of the generation it pointed at)."""
    link = Path(exports) / CURRENT
    return link if link.is_dir() and not link.is_symlink() else None


def check_current(exports: Path) -> None:
    """Before an export: ``DIR/current`` must be the toolkit's link, or a copy of a generation (which the
    export replaces by the link: left alone, it would keep the previous files under the path users ship
    from). A file there, or a directory holding anything a generation does not, is not replaced: a usage
    error before any work."""
    exports = Path(exports)
    link = exports / CURRENT
    if link.is_symlink() or not link.exists():
        return
    if not link.is_dir():
        raise UsageError(f"{link} is a file; the toolkit keeps {CURRENT} as a link to the live generation",
                         hint=f"move or remove {link}, then export again")
    ours = {p.name for gen in exports.glob(f"{GENERATION_PREFIX}*") if gen.is_dir() for p in gen.iterdir()}
    ours |= {Path(e.get("path", "")).name for e in read_manifest(exports).get("artifacts", [])} \
        if (exports / MANIFEST).is_file() else set()
    foreign = sorted(p.name for p in link.iterdir() if p.is_dir() or p.name not in ours)
    if foreign:
        raise UsageError(f"{link} is a directory (not the toolkit's link to the live generation) holding files no "
                         f"export wrote: {', '.join(foreign[:5])}{' ...' if len(foreign) > 5 else ''}",
                         hint=f"move them out of {link} (or remove it); the export then replaces it by the link")


def point_current(exports: Path, generation_dir: str) -> None:
    """Point the ``DIR/current`` symlink at the live generation, atomically (a new link renamed over
    the old). After the manifest: the manifest is the commit, the link a convenience that follows it.
    A copied ``current`` directory (``check_current`` made sure it holds only a generation's files) is
    moved aside first and removed, so the path never keeps an earlier generation's files."""
    exports = Path(exports)
    link, tmp = exports / CURRENT, exports / f".{CURRENT}-{generation_dir}"
    copied = _copied_current(exports)
    if copied is not None:
        trash = exports / f"{TRASH_PREFIX}{CURRENT}-{uuid.uuid4().hex[:6]}"
        try:
            os.rename(copied, trash)
        except OSError as exc:
            raise write_error(copied, exc) from None
        shutil.rmtree(trash, ignore_errors=True)
        print(f"note: {link} was a directory (a copy of an earlier generation): replaced by a link to "
              f"{generation_dir}", file=sys.stderr)
    try:
        if tmp.is_symlink():
            tmp.unlink()
        os.symlink(generation_dir, tmp, target_is_directory=True)
        os.replace(tmp, link)
    except OSError as exc:  # a file system without symlinks: say so, the export itself is committed
        with contextlib.suppress(OSError):
            if link.is_symlink():
                link.unlink()  # a link to the previous generation would be a stale path to ship from
        print(f"note: could not point {link} at {generation_dir}: {exc.strerror or exc}; {link} does not exist, "
              f"ship from {exports / generation_dir}", file=sys.stderr)


def remove_stale(exports: Path, keep: set[str]) -> None:
    """Remove staging dirs and generation dirs that the manifest no longer references, except a
    generation a reader still holds (it is removed by a later export). Called with the writer lock
    held, so no other export's staging directory is in progress."""
    exports = Path(exports)
    if not exports.is_dir():
        return
    for child in exports.iterdir():
        if child.name in keep or not child.is_dir():
            continue
        if child.name.startswith((STAGING_PREFIX, TRASH_PREFIX)):
            shutil.rmtree(child, ignore_errors=True)
        elif child.name.startswith(GENERATION_PREFIX):
            _remove_generation(child)


def _remove_generation(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        if not _flock(fd, exclusive=True, wait=False):
            return  # a reader holds it
        trash = directory.with_name(f"{TRASH_PREFIX}{directory.name}-{uuid.uuid4().hex[:6]}")
        try:
            os.rename(directory, trash)  # gone for readers at once; deleted at leisure
        except OSError:
            return
    finally:
        os.close(fd)
    shutil.rmtree(trash, ignore_errors=True)


def reference_model_path(exports: Path, manifest: dict) -> Path:
    """The Keras model the export came from, checked to be unchanged since."""
    source = manifest.get("source_model", {})
    path = Path(exports) / source.get("path", schema.MODEL)  # an absolute path stays absolute
    if not path.is_file():
        raise DataError(f"reference model {path} (named in the manifest) not found")
    if source.get("sha256") and sha256_file(path) != source["sha256"]:
        raise DataError(
            f"{path} changed since the export was made (sha256 differs from the manifest)",
            hint="re-run `toolkit export --force` so the artifacts come from this model",
        )
    return path
