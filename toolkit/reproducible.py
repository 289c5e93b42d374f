"""Byte-for-byte reproducible files: the convention of reproducible builds, ``SOURCE_DATE_EPOCH``
(https://reproducible-builds.org/specs/source-date-epoch/), honoured wherever a time would be
written into a file. The JSON records keep the real time in their own provenance fields.

A ``.keras`` archive carries two times: the zip entry of its weights file and ``date_saved`` in its
``metadata.json``. With ``SOURCE_DATE_EPOCH`` set, both are set to that time (UTC), and the Python
object ids Keras writes as ``shared_object_id`` are renumbered, so the same weights give the same bytes
in any process.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from datetime import datetime, timezone
from pathlib import Path

from toolkit.errors import UsageError

ENV_VAR = "SOURCE_DATE_EPOCH"
ZIP_EPOCH = 315532800  # 1980-01-01T00:00:00Z: the earliest time a zip entry can hold


def source_date_epoch() -> int | None:
    """The time files should carry, from $SOURCE_DATE_EPOCH (None when it is not set)."""
    value = os.environ.get(ENV_VAR)
    if value is None or value == "":
        return None
    try:
        epoch = int(value)
    except ValueError:
        raise UsageError(f"${ENV_VAR} must be a whole number of seconds since 1970, got {value!r}") from None
    if epoch < 0:
        raise UsageError(f"${ENV_VAR} must not be negative, got {epoch}")
    return epoch


def renumber_shared_objects(config):
    """Keras writes ``shared_object_id`` (a Python ``id()``) where layers share one object (the dtype
    policy layers share after bf16 training): a number that differs in every process. Renumbered
    0, 1, 2, ... in the order the ids first appear, which keeps what they mean (equal ids, one object)."""
    numbers: dict = {}

    def walk(node):
        if isinstance(node, dict):
            return {k: (numbers.setdefault(v, len(numbers)) if k == "shared_object_id" else walk(v))
                    for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    return walk(config)


def normalize_keras_archive(path: Path, epoch: int) -> None:
    """Rewrite a .keras zip in place with every entry dated ``epoch`` and ``date_saved`` set to it."""
    path = Path(path)
    moment = datetime.fromtimestamp(max(epoch, ZIP_EPOCH), tz=timezone.utc)
    stamp = moment.timetuple()[:6]
    buf = io.BytesIO()
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(buf, "w") as dst:
        for info in src.infolist():
            data = src.read(info.filename)
            if info.filename == "config.json":
                data = json.dumps(renumber_shared_objects(json.loads(data))).encode()
            if info.filename == "metadata.json":
                meta = json.loads(data)
                if "date_saved" in meta:
                    meta["date_saved"] = datetime.fromtimestamp(epoch, tz=timezone.utc).strftime("%Y-%m-%d@%H:%M:%S")
                data = json.dumps(meta).encode()
            entry = zipfile.ZipInfo(info.filename, date_time=stamp)
            entry.compress_type = info.compress_type
            entry.external_attr = 0o644 << 16
            dst.writestr(entry, data)
    path.write_bytes(buf.getvalue())
