"""The files the commands share: their names, their schema versions and typed views to read them.

The one place the names of manifest.json, parity.json, bench.json, gate.json (and the other files
an export directory holds) are written, and the one place the rules every reader needs live: an
artifact's deployable size, a parity row's verdict, a bench row's identity. Every command, the pytest
plugin and benchmarks/ read the files through here (like Polygraphy's ``comparator/struct.py``: the
result types own their file format).

A view is a read-only mapping over the JSON document (``doc["variants"]`` still works) with typed
properties for what more than one reader needs. Each file carries ``schema_version``; a file without
one was written before versions were recorded and reads as version 1; a newer version than this
toolkit knows is an error, not a guess.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path

from toolkit.errors import DataError

# --- file names (relative to an export directory) -----------------------------------------------
MANIFEST = "manifest.json"
TRAIN = "train.json"
PARITY = "parity.json"
PARITY_MD = "parity.md"
BENCH = "bench.json"
GATE = "gate.json"
FOOTPRINT = "footprint.json"
RECIPE = "quantization-recipe.json"
REPORT = "report.md"
LABELS = "labels.txt"
MODEL = "model.keras"  # the trained model (``toolkit train``)
PARITY_PNG = "parity-disagreements.png"
FINETUNED_MODEL = "int8-finetuned-w{levels}.keras"  # in a generation directory: the fine-tuned weights (per grid)
# in a generation directory: the weights with learned rounding on a grid of -levels..levels its int8 came from
ROUNDED_MODEL = "int8-rounded-w{levels}.keras"

# --- versions: bump on a change a reader of the old version would misread ---------------------------
VERSIONS = {MANIFEST: 1, PARITY: 1, BENCH: 1, GATE: 1, FOOTPRINT: 1}
VERSION_KEY = "schema_version"


def versioned(name: str, doc: dict) -> dict:
    """``doc`` with its file's schema version as the first key (what the writers call)."""
    return {VERSION_KEY: VERSIONS[name], **{k: v for k, v in doc.items() if k != VERSION_KEY}}


def check_version(name: str, doc: Mapping, path: Path | str | None = None) -> None:
    known = VERSIONS.get(name)
    found = doc.get(VERSION_KEY, 1)
    if known is not None and (not isinstance(found, int) or found > known):
        raise DataError(f"{path or name}: schema version {found!r} is newer than this toolkit reads ({known})",
                        hint="upgrade the toolkit, or re-make the file with this one")


def read_json(path: Path | str) -> dict:
    """A JSON file, or a DataError naming it (missing, not JSON, or one of the shared files in a schema version
    newer than this toolkit reads). Every reader of the package comes through here (artifacts.read_json)."""
    try:
        doc = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise DataError(f"{path} not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path} is not valid JSON ({exc})") from None
    if Path(path).name in VERSIONS and isinstance(doc, dict):
        check_version(Path(path).name, doc, path)
    return doc


def model_bytes(entry: Mapping) -> int:
    """An artifact's deployable size: ``model_bytes`` where the file is not the whole model (the C array's
    embedded model, OpenVINO's .xml plus its .bin), else the file's ``bytes``."""
    return entry["model_bytes"] if "model_bytes" in entry else entry.get("bytes")


class View(Mapping):
    """A read-only view of one JSON document (a mapping, so older code reading keys keeps working)."""

    name: str = ""

    def __init__(self, doc: Mapping, path: Path | str | None = None):
        self._doc = doc
        self.path = Path(path) if path is not None else None

    def __getitem__(self, key):
        return self._doc[key]

    def __iter__(self) -> Iterator:
        return iter(self._doc)

    def __len__(self) -> int:
        return len(self._doc)

    def raw(self) -> Mapping:
        return self._doc

    @classmethod
    def versioned(cls, doc: dict) -> dict:
        """``doc`` stamped with this file's schema version (what its writer calls)."""
        return versioned(cls.name, doc)

    @classmethod
    def read(cls, directory: Path | str, required: bool = True):
        """The view of ``directory/<its file name>`` (None when absent and not required)."""
        return cls.read_file(Path(directory) / cls.name, required)

    @classmethod
    def read_file(cls, path: Path | str, required: bool = True):
        path = Path(path)
        if not path.is_file():
            if required:
                raise DataError(f"{path} not found")
            return None
        doc = read_json(path)
        check_version(cls.name, doc, path)  # also under another file name (--json PATH)
        return cls(doc, path)


class Artifact(View):
    """One manifest entry: a file of the export and what runs it."""

    variant = property(lambda self: self["variant"])
    format = property(lambda self: self["format"])
    quantization = property(lambda self: self.get("quantization"))
    path_in_export = property(lambda self: self["path"])
    sha256 = property(lambda self: self["sha256"])
    size = property(lambda self: model_bytes(self))
    ops = property(lambda self: list(self.get("ops", [])))
    companions = property(lambda self: list(self.get("companions", [])))


class Manifest(View):
    name = MANIFEST

    @property
    def artifacts(self) -> list[Artifact]:
        return [Artifact(e) for e in self["artifacts"]]

    def by_variant(self) -> dict[str, Artifact]:
        return {a.variant: a for a in self.artifacts}

    @property
    def failed(self) -> list[dict]:
        return list(self.get("failed", []))

    generation = property(lambda self: self["generation"])


class Parity(View):
    name = PARITY

    @property
    def variants(self) -> dict[str, Mapping]:
        return dict(self["variants"])

    @property
    def reference(self) -> Mapping:
        return self["reference"]

    def passed(self) -> list[str]:
        return [k for k, v in self["variants"].items() if v.get("passed")]


class Bench(View):
    name = BENCH

    @property
    def results(self) -> list[Mapping]:
        return list(self.get("results", []))

    @property
    def failed(self) -> list[Mapping]:
        return list(self.get("failed", []))


class Gate(View):
    name = GATE

    @property
    def checks(self) -> list[Mapping]:
        return list(self.get("checks", []))


class Footprint(View):
    name = FOOTPRINT


class TrainRecord(View):
    name = TRAIN


class Recipe(View):
    """quantization-recipe.json: what an accuracy search chose, per variant (replayed with --recipe)."""

    name = RECIPE

    @property
    def variants(self) -> dict[str, Mapping]:
        return dict(self["variants"])


VIEWS = {v.name: v for v in (Manifest, Parity, Bench, Gate, Footprint)}
