"""The one owner of an export directory: where each file in it lives, its lock, and its records.

Every stage (export, parity, bench, gate, footprint, verify, diagnose, report, the pytest plugin) takes
an ``ExportDir`` and asks it for a file or a record; no module outside this one and toolkit/schema.py
joins a file name to a directory. The layout, the generation directories and the locks are described in
toolkit/artifacts.py, which keeps the mechanics (atomic writes, staging, flock); this class is what the
stages see of them.

An ``ExportDir`` is ``os.PathLike`` (``Path(ed)`` is its root), so the places that only print or pass on
the directory keep working, and the frozen configs hold one (``ExportConfig(exports=...)`` accepts a path
and wraps it).

Records come back as the typed views of toolkit/schema.py (``Manifest``, ``Parity``, ``Bench``, ``Gate``,
``Footprint``): read-only mappings with their schema version checked, never bare dicts.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from pathlib import Path

from toolkit import artifacts, schema
from toolkit.errors import DataError

# names the stages write beside their JSON (a --json PATH elsewhere carries them along, same stem)
BENCH_COMPANIONS = {"csv": ".csv", "markdown": ".md", "latency_png": "-latency.png", "memory_png": "-memory.png",
                    "tradeoff_png": "-tradeoff.png"}


def _in_root(name: str) -> property:
    """The path of the file ``name`` in the directory (``root``: an ExportDir's, a Generation's)."""
    return property(lambda self: self.root / name)


class ExportDir(os.PathLike):
    """An export directory: ``ExportDir("exports")``; ``ExportDir.of(x)`` for a path or an ExportDir."""

    __slots__ = ("root",)

    def __init__(self, root: os.PathLike | str):
        self.root = Path(root.root if isinstance(root, ExportDir) else root)

    @classmethod
    def of(cls, where: ExportDir | os.PathLike | str) -> ExportDir:
        return where if isinstance(where, ExportDir) else cls(where)

    def __fspath__(self) -> str:
        return os.fspath(self.root)

    def __str__(self) -> str:
        return str(self.root)

    def __repr__(self) -> str:
        return f"ExportDir({str(self.root)!r})"

    def __eq__(self, other) -> bool:
        return isinstance(other, ExportDir) and other.root == self.root

    def __hash__(self) -> int:
        return hash(self.root)

    # --- where each file lives (schema.py names them) ---------------------------------------------------
    manifest_path = _in_root(schema.MANIFEST)
    train_path = _in_root(schema.TRAIN)
    model_path = _in_root(schema.MODEL)
    parity_path = _in_root(schema.PARITY)
    parity_md_path = _in_root(schema.PARITY_MD)
    parity_png_path = _in_root(schema.PARITY_PNG)
    bench_path = _in_root(schema.BENCH)
    gate_path = _in_root(schema.GATE)
    footprint_path = _in_root(schema.FOOTPRINT)
    recipe_path = _in_root(schema.RECIPE)
    report_path = _in_root(schema.REPORT)
    labels_path = _in_root(schema.LABELS)

    def npu_compiled_path(self, target: str, variant: str) -> Path:
        """An NPU compiler's output for one variant and target (``toolkit footprint --npu``)."""
        return self.root / "npu" / target / f"{variant}_vela.tflite"

    def diagnose_path(self, variant: str) -> Path:
        return self.root / f"diagnose-{variant}.json"

    def named(self, relative: str | os.PathLike) -> Path:
        """A path the manifest records relative to the directory (an artifact, the recipe, the model)."""
        return self.root / relative

    @staticmethod
    def bench_outputs(json_path: Path) -> dict[str, Path]:
        """bench's JSON and the files written beside it, by kind (``json``, ``csv``, ``markdown``, the plots)."""
        json_path = Path(json_path)
        return {"json": json_path, **{kind: json_path.with_name(json_path.stem + suffix)
                                      for kind, suffix in BENCH_COMPANIONS.items()}}

    @staticmethod
    def predictions_beside(json_path: Path) -> Path:
        """The per-image predictions of a parity JSON file (``*-predictions.npz`` beside it; the gate reads them)."""
        json_path = Path(json_path)
        return json_path.with_name(json_path.stem + "-predictions.npz")

    @staticmethod
    def markdown_beside(json_path: Path) -> Path:
        """The Markdown a command writes beside its JSON (gate, footprint)."""
        return Path(json_path).with_suffix(".md")

    # --- locks -------------------------------------------------------------------------------------
    def writing(self, verbose: bool = True):
        """Serialise writers (a second export waits for the first); see artifacts.writing."""
        return artifacts.writing(self.root, verbose)

    @contextlib.contextmanager
    def reading(self) -> Iterator[schema.Manifest]:
        """The manifest, its generation held (shared lock) until the block ends; see artifacts.reading."""
        with artifacts.reading(self.root) as manifest:
            yield schema.Manifest(manifest, self.manifest_path)

    # --- records -----------------------------------------------------------------------------------
    def manifest(self) -> schema.Manifest:
        """The manifest (a DataError naming the command to run when there is none)."""
        return schema.Manifest(artifacts.read_manifest(self.root), self.manifest_path)

    def _record(self, view: type[schema.View], path: Path, required: bool, command: str):
        if required and not path.is_file():
            raise DataError(f"{path} not found", hint=f"run `toolkit {command} --exports {self.root}` first")
        return view.read_file(path, required)

    def parity(self, required: bool = True) -> schema.Parity | None:
        return self._record(schema.Parity, self.parity_path, required, "parity")

    def bench(self, path: Path | None = None, required: bool = True) -> schema.Bench | None:
        return self._record(schema.Bench, Path(path or self.bench_path), required, "bench")

    def gate(self, required: bool = True) -> schema.Gate | None:
        return self._record(schema.Gate, self.gate_path, required, "gate")

    def footprint(self, required: bool = True) -> schema.Footprint | None:
        return self._record(schema.Footprint, self.footprint_path, required, "footprint")

    def parity_predictions(self, parity: Mapping) -> Path | None:
        """The per-image predictions file a parity record names (None when it names none)."""
        name = parity.get("predictions_file")
        return self.root / name if name else None

    def train_record(self, required: bool = False) -> schema.TrainRecord | None:
        return self._record(schema.TrainRecord, self.train_path, required, "train")

    # --- the files an export holds -----------------------------------------------------------------
    def file(self, entry: Mapping) -> Path:
        """An artifact's path (not checked)."""
        return artifacts.artifact_path(self.root, dict(entry))

    def verified(self, entry: Mapping) -> Path:
        """An artifact's path, checked against its recorded sha256 (a DataError when it changed)."""
        return artifacts.verify_entry(self.root, dict(entry))

    def reference_model(self, manifest: Mapping) -> Path:
        """The Keras model the export came from, checked to be unchanged since."""
        return artifacts.reference_model_path(self.root, dict(manifest))


class Generation:
    """One generation directory of an export being built (``.staging-<id>``, renamed ``artifacts-<id>`` when
    committed): where its files go, and the path the manifest records for each (relative to the export)."""

    __slots__ = ("path", "prefix")

    def __init__(self, staging: Path):
        self.path = Path(staging)
        self.prefix = artifacts.GENERATION_PREFIX + self.path.name.removeprefix(artifacts.STAGING_PREFIX)

    def file(self, name: str) -> Path:
        return self.path / name

    def recorded(self, name: str) -> str:
        """How the manifest names the file ``name`` of this generation once committed."""
        return f"{self.prefix}/{name}"

    root = property(lambda self: self.path)
    labels_path = _in_root(schema.LABELS)
    work_path = _in_root(".work")  # the formats' scratch files, removed before the commit

    def finetuned_model_path(self, levels: int) -> Path:
        """The weights fine-tuned through a weight grid of -levels..levels (one file per grid)."""
        return self.path / schema.FINETUNED_MODEL.format(levels=levels)

    def rounded_model_path(self, levels: int) -> Path:
        """The weights learned rounding put on a grid of -levels..levels (one file per grid)."""
        return self.path / schema.ROUNDED_MODEL.format(levels=levels)
