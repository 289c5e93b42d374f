"""What every variant of one export is made from: the model, its data and preprocessing, the calibration
sample, Keras' scores on the check images, and the export context the formats build from."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from toolkit.config import ExportConfig, PreprocessOptions
from toolkit.datasets import open_dataset, reopen, sample_indices
from toolkit.datasets.base import validation_note
from toolkit.errors import DataError, UsageError
from toolkit.exportdir import ExportDir
from toolkit.exporters import ExportContext, Exporter
from toolkit.modelinfo import confirm_output
from toolkit.preprocess import resolve
from toolkit.progress import say
from toolkit.provenance import sha256_file
from toolkit.references import Reference, load_reference


def log(cfg: ExportConfig, message: str) -> None:
    say(message, cfg.verbose)


def train_record(model_path: Path) -> dict | None:
    """The training record beside a model, when it is this very model's."""
    try:
        record = ExportDir(Path(model_path).parent).train_record()
    except DataError:
        return None
    if record is None:
        return None
    # only a record of this very model speaks for it
    return record if record.get("model", {}).get("sha256") == sha256_file(model_path) else None


def fixed_size(model, input_shape: tuple):
    """The model with its dynamic height and width fixed (``--input-size``): a new input of that shape
    calling the same layers (the same weights, nothing copied). Every format then gets one size
    (LiteRT's XNNPack, for one, cannot reshape a dynamic-size convolution at run time)."""
    from toolkit._quiet import keras

    k = keras()
    image = k.Input(shape=tuple(input_shape), name=model.inputs[0].name.split(":")[0] or "image")
    return k.Model(image, model(image), name=model.name)


def dataset_and_preprocessing(cfg: ExportConfig, info, model_path: Path):
    """The dataset and preprocessing for this model (``info``: what it takes): as given, else as it was trained
    with."""
    record = train_record(model_path)
    if cfg.dataset is not None:
        dataset = open_dataset(cfg.dataset, data_dir=cfg.data_dir, **dict(cfg.dataset_options))
    elif record and record.get("dataset"):
        dataset = reopen(record["dataset"], data_dir=cfg.data_dir)
    else:
        dataset = open_dataset(None, data_dir=cfg.data_dir)
    options = cfg.preprocess
    if not options.given and record and record.get("preprocessing"):
        trained = record["preprocessing"]  # what the model was trained on, unless flags say otherwise
        options = PreprocessOptions(scale=trained["scale"], color_mode=trained["color_mode"],
                                    mean=tuple(trained["mean"]) if trained.get("mean") else None,
                                    std=tuple(trained["std"]) if trained.get("std") else None)
    return dataset, resolve(dataset, info, options), info


@dataclass
class Inputs:
    """What every variant of one export is made from and checked against."""

    model: object  # keras.Model (its height and width fixed when the model takes any); None for other frameworks
    model_path: Path
    source: Reference  # the model in its own framework: what every variant is checked against
    data: object  # toolkit.datasets.Dataset
    prep: object  # toolkit.preprocess.Preprocessing
    info: object  # toolkit.modelinfo.ModelInfo
    idx: np.ndarray  # the calibration sample's indices in the training split
    population: int  # training images the sample was drawn from
    calibration: np.ndarray
    check_images: np.ndarray
    reference: np.ndarray  # the reference's scores on the check images


def check_flags(cfg: ExportConfig, exporters: list[Exporter]) -> None:
    """An export already in DIR without --force, and every usage error of the settings (ExportConfig.check)."""
    manifest_path = cfg.exports.manifest_path
    if manifest_path.exists() and not cfg.force:
        raise UsageError(
            f"{manifest_path} already exists; refusing to overwrite it",
            hint="pass --force to replace the export, or --exports DIR for a new one",
        )
    cfg.check(exporters)


def load_inputs(cfg: ExportConfig) -> Inputs:
    """The model, its data and preprocessing, the calibration sample and the reference's scores on the check
    images (the model run by its own framework: toolkit/references/)."""
    model_path = Path(cfg.model) if cfg.model else cfg.exports.model_path
    source = load_reference(model_path)
    model = source.model if source.keras else None
    data, prep, info = dataset_and_preprocessing(cfg, source.info, model_path)
    if source.keras and info.image_size is not None and None in info.image_size:
        model = fixed_size(model, prep.input_shape)
        source = replace(source, model=model)
        info = replace(info, input_shape=tuple(prep.input_shape), fixed_at_export="--input-size "
                       f"{prep.image_size[0]}x{prep.image_size[1]} (the model takes any height and width)")
    population = len(data.train)
    count = min(cfg.calibration_samples, population)
    idx = sample_indices(count, population, seed=cfg.calibration_seed)
    calibration = prep.load(data.train, idx)
    if not np.isfinite(calibration).all():
        raise DataError("calibration images contain NaN or Inf values", hint=f"check the data in {data.source}")
    check_images = prep.load(data.test, np.arange(min(cfg.check_samples, len(data.test))))
    reference = source.runner().infer(check_images)
    info = confirm_output(info, reference)
    return Inputs(model, model_path, source, data, prep, info, idx, population, calibration, check_images, reference)


def context(cfg: ExportConfig, exporters: list[Exporter], inp: Inputs, workdir: Path) -> ExportContext:
    ctx = ExportContext(
        model=inp.model, model_path=inp.model_path, reference=inp.source, workdir=workdir, calibration_images=inp.calibration,
        calibration_method=cfg.calibration_method, opset=cfg.opset,
    )
    control = control_settings(cfg, exporters)
    # the validation split (loaded on first use): the int8 range estimator and accuracy control choose on it
    ctx.log = lambda message: log(cfg, message)
    ctx.validation = validation_loader(inp.data, inp.prep, inp.source.runner, ctx.log)
    if control is not None:
        ctx.control = control
    return ctx


def control_settings(cfg: ExportConfig, exporters: list[Exporter]):
    """Accuracy-control settings from the flags, or None when neither flag is given."""
    if cfg.max_accuracy_drop is None and cfg.recipe is None:
        return None
    from toolkit.accuracy_control import ControlSettings, read_recipe

    cfg.check(exporters)  # the API path too (export() checked already; a caller of context() alone may not have)
    return ControlSettings(max_drop=cfg.max_accuracy_drop, max_layers=cfg.max_fallback_layers,
                           recipe=read_recipe(cfg.recipe) if cfg.recipe is not None else None,
                           min_agreement=cfg.min_agreement, npu=tuple(cfg.npu),
                           max_slowdown=cfg.max_slowdown)


def validation_loader(data, prep, reference, log=None):
    """() -> the validation split, preprocessed, with the reference's predictions (loaded once). ``reference``:
    () -> a runner of the reference model."""
    from toolkit.accuracy_control import Validation

    cache: list = []

    def load() -> Validation:
        if not cache:
            split = data.validation
            if len(split) == 0:
                raise DataError(f"{data.source} has no validation images: accuracy control measures on them")
            images = prep.load(split)
            predicted = reference().infer_batched(images, 500).argmax(1)
            unseen = "" if data.validation_named else ", a share of the training images: the model may have seen them"
            cache.append(Validation(images, np.asarray(split.labels), predicted,
                                    f"{data.kind} validation split ({len(split):,} images{unseen})"))
            if log is not None and validation_note(data):
                log(f"  note: {validation_note(data)}")
        return cache[0]

    return load
