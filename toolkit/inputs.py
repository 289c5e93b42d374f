"""What parity, bench and diagnose feed the models: the reference Keras model an export came
from, and its dataset read through the preprocessing recorded in the manifest (or another
``--dataset``, which must then fit the model)."""

from __future__ import annotations

from pathlib import Path

from toolkit.datasets import open_dataset, reopen
from toolkit.errors import DataError, UsageError
from toolkit.preprocess import Preprocessing, check_classes, resolve
from toolkit.provenance import sha256_file


def reference_model(cfg, manifest: dict) -> Path:
    """The Keras model the export came from (``--model`` may say where it is now)."""
    if cfg.model is None:
        return cfg.exports.reference_model(manifest)
    path = Path(cfg.model)
    if not path.is_file():
        raise DataError(f"--model {path}: no such file")
    expected = manifest.get("source_model", {}).get("sha256")
    if expected and sha256_file(path) != expected:
        raise DataError(f"--model {path} is not the model this export was made from (sha256 differs from the "
                        "manifest's source_model)", hint="give the model the export came from, or re-export")
    return path


def data_for(cfg, manifest: dict, info) -> tuple:
    """(dataset, preprocessing, matches_export) for parity and bench: the export's dataset and
    preprocessing unless ``--dataset`` names another dataset (then it must fit the model)."""
    recorded = manifest.get("dataset")
    if cfg.dataset is not None:
        dataset = open_dataset(cfg.dataset, data_dir=cfg.data_dir, **dict(cfg.dataset_options))
    else:
        dataset = reopen(recorded, data_dir=cfg.data_dir)
    if manifest.get("preprocessing"):
        prep = Preprocessing.from_json(manifest["preprocessing"])
        check_classes(dataset, info)
        h, w, _ = dataset.image_shape
        if not prep.resize and tuple(prep.image_size) != (h, w):
            raise UsageError(f"the export feeds the model {prep.image_size[0]}x{prep.image_size[1]} images but "
                             f"dataset {dataset.source} has {h}x{w} images",
                             hint="re-export with --resize, or use the export's dataset")
    else:  # an export made before preprocessing was recorded: MNIST, [0, 1]
        prep = resolve(dataset, info)
    matches = bool(recorded) and recorded.get("fingerprint", {}).get("sha256") == dataset.fingerprint.get("sha256")
    return dataset, prep, matches


def test_images(cfg, manifest, count: int, seed: int = 0):
    """``count`` fixed-seed test images of an export, preprocessed as its manifest says (drawn with replacement
    only when the test split is smaller): what bench times and the gate re-measures with."""
    import numpy as np

    from toolkit.modelinfo import for_export

    model_path = reference_model(cfg, manifest)
    dataset, prep, _ = data_for(cfg, manifest, for_export(manifest, model_path))
    n = len(dataset.test)
    idx = np.random.default_rng(seed).choice(n, size=count, replace=count > n)
    return prep.load(dataset.test, idx)
