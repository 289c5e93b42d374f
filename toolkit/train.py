"""Training the seed CNN (or a tutorial architecture) on MNIST or a user's dataset: tf.data
pipeline, determinism, record, saving.

Datasets held in memory (MNIST, .npz) are fed with ``from_tensor_slices``; an image folder is
streamed batch by batch from a generator whose shuffle order is fixed by the seed and the epoch.
"""

from __future__ import annotations

import hashlib
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from toolkit.artifacts import atomic_write_json, write_error
from toolkit.config import TrainConfig
from toolkit.errors import ToolkitError, UsageError
from toolkit.exportdir import ExportDir
from toolkit.provenance import provenance, sha256_file
from toolkit.reproducible import normalize_keras_archive, source_date_epoch


def weights_sha256(model) -> str:
    """sha256 over every weight tensor's bytes, in the model's weight order."""
    h = hashlib.sha256()
    for w in model.get_weights():
        h.update(np.ascontiguousarray(w).tobytes())
    return h.hexdigest()


def _validate(cfg: TrainConfig) -> None:
    if cfg.epochs < 1:
        raise UsageError(f"--epochs must be at least 1, got {cfg.epochs}")
    if cfg.batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, got {cfg.batch_size}")
    if cfg.precision not in ("float32", "bf16", "auto"):
        raise UsageError(f"--precision must be float32, bf16 or auto, got {cfg.precision!r}")
    if cfg.lr_schedule not in ("constant", "cosine"):
        raise UsageError(f"--lr-schedule must be constant or cosine, got {cfg.lr_schedule!r}")
    if not cfg.learning_rate > 0:
        raise UsageError(f"--learning-rate must be positive, got {cfg.learning_rate}")
    if cfg.train_limit is not None and cfg.train_limit < 1:
        raise UsageError(f"--train-limit must be at least 1, got {cfg.train_limit}")
    if cfg.dropout is not None and not 0 <= cfg.dropout < 1:
        raise UsageError(f"--dropout must be in [0, 1), got {cfg.dropout}")
    from toolkit.model import ARCHITECTURES

    if cfg.arch not in ARCHITECTURES:
        raise UsageError(f"--arch must be one of {', '.join(ARCHITECTURES)}, got {cfg.arch!r}")


def _progress_callback(k, epochs: int, steps: int):
    """A bar within each epoch (on a terminal) and one line per epoch on stderr (stdout is kept for
    results)."""
    from toolkit.progress import enabled, say, tqdm_options

    class EpochLine(k.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()
            self.bar = None
            if enabled():
                from tqdm import tqdm

                self.bar = tqdm(total=steps, desc=f"epoch {epoch + 1}/{epochs}", unit="batch", **tqdm_options())

        def on_train_batch_end(self, batch, logs=None):
            if self.bar is not None:
                self.bar.update(1)
                if batch % 20 == 0 and logs:
                    self.bar.set_postfix_str(f"loss {float(logs.get('loss', float('nan'))):.4f}")

        def on_epoch_end(self, epoch, logs=None):
            if self.bar is not None:
                self.bar.close()
            logs = logs or {}
            say(
                f"  epoch {epoch + 1}/{epochs}  loss {logs.get('loss', float('nan')):.4f}  "
                f"accuracy {logs.get('accuracy', float('nan')):.4f}  "
                f"val_accuracy {logs.get('val_accuracy', float('nan')):.4f}  "
                f"({time.perf_counter() - self.start:.1f} s)"
            )

    return EpochLine()


def _streamed(tf, split, prep, batch_size: int, seed: int | None, errors: list):
    """A tf.data pipeline decoding ``split`` one batch at a time (for image folders); shuffled in a
    seed-and-epoch-determined order when ``seed`` is given. An image that cannot be decoded raises
    the toolkit's one-line error inside TensorFlow's iterator, which wraps it in a traceback of its
    own: the error is kept in ``errors`` so that training re-raises it as it was."""
    n = len(split)
    epoch = [0]

    def batches():
        order = np.arange(n)
        if seed is not None:
            order = np.random.default_rng([seed, epoch[0]]).permutation(n)
            epoch[0] += 1
        try:
            for idx, x in prep.batches(split, batch_size, order):
                yield x, split.labels[idx]
        except ToolkitError as exc:
            errors.append(exc)
            raise

    signature = (tf.TensorSpec((None, *prep.input_shape), tf.float32), tf.TensorSpec((None,), tf.int64))
    steps = -(-n // batch_size)  # Keras needs the length to know an epoch ended where it should
    dataset = tf.data.Dataset.from_generator(batches, output_signature=signature)
    return dataset.apply(tf.data.experimental.assert_cardinality(steps)).prefetch(2)


def _as_float32(k, trained, cfg: TrainConfig, prep, data):
    """The same architecture built float32 with the trained weights (mixed precision keeps float32
    variables, so nothing is rounded): what is saved, evaluated and exported is a float32 model."""
    from toolkit.model import build

    model = build(cfg.arch, cfg.dropout, prep.input_shape, data.num_classes)
    model.set_weights(trained.get_weights())
    # a fixed optimizer name (as in training): Keras numbers unnamed ones per process, and the name is saved
    model.compile(optimizer=k.optimizers.Adam(name="adam"),
                  loss=k.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    return model


@dataclass
class _Pipelines:
    """The tf.data pipelines training reads, and the toolkit errors their streamed batches kept (see
    ``_streamed``): a user's file that failed inside tf.data is re-raised as the toolkit's own error."""

    train: Any
    validation: Any
    decode_errors: list


@dataclass
class _Evaluation:
    """The final figures: validation accuracy of the float32 model (None when training was float32:
    the last epoch's figure is it), test loss and accuracy, and the seconds the test evaluation took."""

    validation_accuracy: float | None
    test_loss: float
    test_accuracy: float
    seconds: float


def _raise_decode_error(errors: list) -> None:
    """Inside an ``except``: re-raise the first error a streamed pipeline kept, as it was, if any."""
    if errors:
        raise errors[0] from None


def _pipelines(tf, *, cfg: TrainConfig, data, prep, train_split) -> _Pipelines:
    """The training pipeline (shuffled by the seed, batched) and the validation one: in memory via
    ``from_tensor_slices`` when the split is held in memory, streamed otherwise."""
    decode_errors: list = []
    n = len(train_split)
    if not len(data.validation):
        raise UsageError(f"{data.source}: too few training images to hold out a validation split")
    if train_split.in_memory:
        dataset = (
            tf.data.Dataset.from_tensor_slices((prep.load(train_split), train_split.labels))
            .shuffle(n, seed=cfg.seed, reshuffle_each_iteration=True)
            .batch(cfg.batch_size)
            .prefetch(tf.data.AUTOTUNE)
        )
        val = tf.data.Dataset.from_tensor_slices((prep.load(data.validation), data.validation.labels)).batch(1000)
    else:
        dataset = _streamed(tf, train_split, prep, cfg.batch_size, cfg.seed, decode_errors)
        val = _streamed(tf, data.validation, prep, 1000, None, decode_errors)
    return _Pipelines(train=dataset, validation=val, decode_errors=decode_errors)


def _build_model(k, *, cfg: TrainConfig, prep, data):
    """The architecture, built under Keras's mixed bfloat16 policy when ``cfg.precision`` is bf16."""
    from toolkit.model import build

    if cfg.precision == "bf16":  # process-wide in Keras: set for building the model, restored right after
        from keras.src.backend.common import global_state  # the raw setting, restored as it was

        previous = global_state.get_global_attribute("dtype_policy", None)
        k.mixed_precision.set_global_policy("mixed_bfloat16")
        try:
            return build(cfg.arch, cfg.dropout, prep.input_shape, data.num_classes)
        finally:
            global_state.set_global_attribute("dtype_policy", previous)
    # the policy is left untouched: setting it, even to float32, changes what model.keras holds
    return build(cfg.arch, cfg.dropout, prep.input_shape, data.num_classes)


def _compile(k, model, cfg: TrainConfig, n: int) -> None:
    """Compile ``model`` for training on ``n`` images: Adam at the configured (constant or cosine)
    learning rate, sparse cross-entropy on logits, accuracy."""
    learning_rate = cfg.learning_rate
    if cfg.lr_schedule == "cosine":  # decays to 0 at the last step of the last epoch
        steps = -(-n // cfg.batch_size) * cfg.epochs
        learning_rate = k.optimizers.schedules.CosineDecay(cfg.learning_rate, decay_steps=steps)
    model.compile(
        optimizer=k.optimizers.Adam(learning_rate, name="adam"),  # fixed name: Keras numbers unnamed ones per process
        loss=k.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        jit_compile=cfg.jit_compile,
    )


def _announce(*, cfg: TrainConfig, model, n: int, data, prep) -> None:
    """The one line on stderr saying what is about to be trained, on what, and how."""
    print(
        f"training {cfg.arch} ({model.count_params():,} parameters) on {n:,} {data.kind} images "
        f"({prep.describe()}), "
        f"{cfg.epochs} epoch(s), batch {cfg.batch_size}, Adam lr {cfg.learning_rate:g} {cfg.lr_schedule}"
        f"{', XLA' if cfg.jit_compile else ''}{', bf16 compute' if cfg.precision == 'bf16' else ''}, seed {cfg.seed}",
        file=sys.stderr,
    )


def _fit(k, model, cfg: TrainConfig, *, pipes: _Pipelines, n: int):
    """Fit ``model``; return Keras's history and the seconds fitting took."""
    start = time.perf_counter()
    try:
        history = model.fit(
            pipes.train, validation_data=pipes.validation, epochs=cfg.epochs, verbose=0, shuffle=False,  # tf.data shuffles
            callbacks=[_progress_callback(k, cfg.epochs, -(-n // cfg.batch_size))] if cfg.verbose else [],
        )
    except Exception:
        _raise_decode_error(pipes.decode_errors)
        raise
    return history, time.perf_counter() - start


def _evaluate(tf, k, model, *, cfg: TrainConfig, data, prep, pipes: _Pipelines):
    """The model to save (a float32 rebuild when trained in bf16, validated again) and its final
    figures on the test split."""
    validation_accuracy = None
    try:
        if cfg.precision == "bf16":  # per-epoch validation figures were computed in bf16; the final one is float32
            model = _as_float32(k, model, cfg, prep, data)
            validation_accuracy = float(model.evaluate(pipes.validation, verbose=0)[1])
        start = time.perf_counter()
        if data.test.in_memory:
            test_loss, test_acc = model.evaluate(prep.load(data.test), data.test.labels, batch_size=1000, verbose=0)
        else:
            test = _streamed(tf, data.test, prep, 1000, None, pipes.decode_errors)
            test_loss, test_acc = model.evaluate(test, verbose=0)
    except Exception:
        _raise_decode_error(pipes.decode_errors)
        raise
    seconds = time.perf_counter() - start
    return model, _Evaluation(validation_accuracy=validation_accuracy, test_loss=test_loss,
                              test_accuracy=test_acc, seconds=seconds)


def _epoch_rows(history) -> list[dict]:
    """One row per epoch: its number and every figure Keras recorded for it."""
    return [
        {"epoch": i + 1, **{key: float(values[i]) for key, values in history.history.items()}}
        for i in range(len(history.history["loss"]))
    ]


def _save_model(model, out: Path) -> tuple[Path, int | None]:
    """Save ``model`` as ``out/model.keras`` (beside it, then renamed, so a failure keeps the old
    one; normalized for reproducible builds under $SOURCE_DATE_EPOCH); return its path and the
    epoch used."""
    model_path = ExportDir(out).model_path
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise write_error(out, exc) from None
    # Keras writes model.keras itself; save beside it and rename so a failure keeps the old one.
    tmp_path = model_path.with_name(f".{model_path.name}.tmp.keras")
    epoch = source_date_epoch()
    try:
        model.save(tmp_path)
        if epoch is not None:  # reproducible builds: no wall-clock time inside the archive
            normalize_keras_archive(tmp_path, epoch)
        tmp_path.replace(model_path)
    except OSError as exc:
        tmp_path.unlink(missing_ok=True)
        raise write_error(model_path, exc) from None
    return model_path, epoch


def _record(*, cfg: TrainConfig, model, model_path: Path, data, prep, n: int, source_epoch: int | None,
            precision_chosen: str | None = None,
            epochs: list[dict], evaluation: _Evaluation, train_seconds: float) -> dict:
    """The contents of ``train.json``: the model, hyperparameters, data, per-epoch figures, final
    accuracies, timings and provenance."""
    from toolkit.model import ARCHITECTURES

    validation_accuracy = evaluation.validation_accuracy
    return {
        "model": {
            "path": model_path.name,
            "architecture": cfg.arch,
            "description": ARCHITECTURES[cfg.arch].description,
            "parameters": int(model.count_params()),
            "sha256": sha256_file(model_path),
            "weights_sha256": weights_sha256(model),
        },
        "hyperparameters": {
            "epochs": cfg.epochs,
            "batch_size": cfg.batch_size,
            "learning_rate": cfg.learning_rate,
            "lr_schedule": cfg.lr_schedule,
            "jit_compile": cfg.jit_compile,
            "precision": cfg.precision,
            **({"precision_chosen": precision_chosen} if precision_chosen else {}),
            "optimizer": "adam",
            "dropout": cfg.dropout,
            "seed": cfg.seed,
            "train_limit": cfg.train_limit,
        },
        "data": {
            "source": data.source,
            "sha256": data.fingerprint.get(data.digest_key),
            "train_images": n,
            "validation_images": len(data.validation),
            "test_images": len(data.test),
        },
        "dataset": data.describe(),
        "preprocessing": prep.to_json(),
        "source_date_epoch": source_epoch,
        "epochs": epochs,
        "validation_accuracy": epochs[-1]["val_accuracy"] if validation_accuracy is None else validation_accuracy,
        **({"epoch_validation_precision": "bf16 (the final validation_accuracy is the float32 model's)"}
           if cfg.precision == "bf16" else {}),
        "test_accuracy": float(evaluation.test_accuracy),
        "test_loss": float(evaluation.test_loss),
        "train_seconds": round(train_seconds, 3),
        "evaluate_seconds": round(evaluation.seconds, 3),
        "provenance": provenance(),
    }


def resolve_precision(precision: str) -> tuple[str, str | None]:
    """``auto``: bf16 where the CPU computes it natively (AVX512_BF16 or AMX, detected in /proc/cpuinfo, never
    assumed), else float32; elsewhere bf16 is emulated and many times slower (measured on an AMD EPYC with
    AVX2 only: the seed CNN's default training did not finish in over 80 CPU-minutes). Returns the precision
    and, for auto, why."""
    if precision != "auto":
        return precision, None
    from toolkit.provenance import cpu_features

    feats = cpu_features()
    if feats.get("avx512_bf16") or feats.get("amx"):
        return "bf16", "auto: the CPU has " + ("AMX" if feats.get("amx") else "AVX512_BF16")
    return "float32", "auto: no AVX512_BF16 or AMX detected, where bf16 would be emulated"


def train(cfg: TrainConfig) -> dict:
    """Train, evaluate, save ``model.keras`` and ``train.json`` into ``cfg.out``; return the record."""
    _validate(cfg)
    precision, why = resolve_precision(cfg.precision)
    if why is not None:
        cfg = replace(cfg, precision=precision)
    source_date_epoch()  # a bad $SOURCE_DATE_EPOCH fails before training, not after
    from toolkit.datasets import open_dataset
    from toolkit.preprocess import for_training

    data = open_dataset(cfg.dataset, data_dir=cfg.data_dir, **dict(cfg.dataset_options))
    prep = for_training(data, cfg.preprocess)

    from toolkit._quiet import keras, tf

    tf, k = tf(), keras()
    # Same seed + op determinism = bit-identical weights on CPU (checked by the tests).
    k.utils.set_random_seed(cfg.seed)
    tf.config.experimental.enable_op_determinism()

    train_split = data.train.head(cfg.train_limit)
    n = len(train_split)
    pipes = _pipelines(tf, cfg=cfg, data=data, prep=prep, train_split=train_split)
    model = _build_model(k, cfg=cfg, prep=prep, data=data)
    _compile(k, model, cfg, n)
    if cfg.verbose:
        _announce(cfg=cfg, model=model, n=n, data=data, prep=prep)
    history, train_seconds = _fit(k, model, cfg, pipes=pipes, n=n)
    model, evaluation = _evaluate(tf, k, model, cfg=cfg, data=data, prep=prep, pipes=pipes)
    model_path, source_epoch = _save_model(model, Path(cfg.out))
    record = _record(cfg=cfg, model=model, model_path=model_path, data=data, prep=prep, n=n,
                     source_epoch=source_epoch, epochs=_epoch_rows(history), evaluation=evaluation,
                     train_seconds=train_seconds, precision_chosen=why)
    atomic_write_json(ExportDir(cfg.out).train_path, record)
    return record
