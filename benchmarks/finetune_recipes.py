"""Fine-tuning recipes on small-data and planted models: does any make the simulated int8 model agree with the float
model on more images the model never saw, and does any reach parity's 99.5% (issue #35)?

    python benchmarks/finetune_recipes.py [--work /tmp/toolkit-finetune] [--models mobilenetv2-small ...]
                                          [--epochs 4] [--from-json]

The small-data models are trained as benchmarks/ptq.py trains its small-data cases (keras.applications, weights=None,
32x32 RGB MNIST, the first 2,000 training images, 10 epochs, seed 0); the planted ones are
benchmarks/learned_rounding.py's dead-channel CNN (a dead ReLU channel whose outgoing weights are 60 times the next
layer's largest, so every other weight of that layer has a coarse int8 grid) and the same CNN planted at 200 times
(its other weights round to -1, 0 or 1 step: plain int8 breaks). Every recipe fine-tunes a copy of it with
toolkit/quantize/finetune.py (distillation toward the float model's logits, through the int8 simulation the
exporters' files follow, ranges re-measured on 500 fixed-seed training images before every epoch) for ``--epochs``
epochs without stopping early, and after every epoch measures the simulated int8 model's agreement with the float
model on 2,000 validation images the model never trained on (MNIST training images 40,000-41,999; the test set is
not read). Reported: each epoch's agreement, the best epoch's gain over the model's own weights (epoch 0) with
its paired 95% interval, and the epoch ``fine_tune``'s own rule would keep. Writes results/finetune-recipes.json
and FINETUNE_RECIPES.md (every number from the JSON).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from _common import mnist_array, parser, per_model_main, provenance_line

MODELS = ("mobilenetv2-small", "efficientnetb0-small", "dead-channel-cnn", "dead-channel-cnn-200x")
VAL_FIRST, VAL_IMAGES, CALIBRATION = 40_000, 2_000, 500
# recipe -> FineTuneSettings fields that differ from the defaults (the first is the default itself)
RECIPES = {
    "default (Adam 1e-5, folded weights)": {},
    "Adam 1e-5, trained through the fold (the default before this page)": {"fold": False},
    "SGD 1e-3 (momentum 0.9), through the fold": {"optimizer": "sgd", "learning_rate": 1e-3, "fold": False},
    "SGD 1e-3 (momentum 0.9), folded weights": {"optimizer": "sgd", "learning_rate": 1e-3},
    "Adam 1e-4": {"learning_rate": 1e-4},
    "mixup (Beta 0.4), teacher's logits on the mixed images": {"mixup": 0.4},
    "KL + a 1-logit hinge on the teacher's class": {"loss": "kl+hinge"},
    # the default through onnx-int8's weight grid (onnxruntime's 7-bit -64..64), as `export --fine-tune` trains for
    # that file; epoch 0 is then the model's own weights on that grid
    "default, through onnx-int8's 7-bit weight grid": {"weight_levels": 64},
}


def _images(data_dir: Path, work: Path):
    """(the small-data .npz, the validation images as 32x32 RGB uint8)."""
    import numpy as np
    import ptq  # benchmarks/ptq.py, beside this script

    npz = ptq.mnist_rgb(data_dir, work / "mnist32rgb-small.npz", small=True)
    val_path = work / "val.npy"
    if not val_path.exists():
        import tensorflow as tf

        x = mnist_array(data_dir, "train_images")[VAL_FIRST : VAL_FIRST + VAL_IMAGES]
        up = tf.image.resize(x[..., None].astype(np.float32), (ptq.SIZE, ptq.SIZE), "bilinear").numpy()
        np.save(val_path, np.repeat(np.clip(np.round(up), 0, 255).astype(np.uint8), 3, axis=-1))
    return npz, np.load(val_path)


def small_model(name: str, work: Path, data_dir: Path):
    """(the small-data model ``name``, trained into ``work`` on first use; its training images and the validation
    images, preprocessed as the toolkit would; the training record, None when the model was already there)."""
    import keras
    import numpy as np
    import ptq

    from toolkit import schema

    npz, val = _images(data_dir, work)
    path = work / name / schema.MODEL
    train = None
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        train = ptq.train_application(name, npz, path)
    model = keras.models.load_model(path)
    # the toolkit's rule (ptq.train_application's): raw pixels for a model that rescales itself, else x / 255
    scale = 1.0 if any(type(layer).__name__ == "Rescaling" for layer in model.layers[:4]) else 255.0
    return model, np.load(npz)["x_train"].astype(np.float32) / scale, val.astype(np.float32) / scale, train


def measure(name: str, work: Path, data_dir: Path, epochs: int) -> dict:
    import numpy as np
    from learned_rounding import PLANTED_MODELS, planted_model

    from toolkit.errors import ConversionError
    from toolkit.quantize.finetune import FineTuneSettings, fine_tune

    model, x_train, x_val, train = (planted_model if name in PLANTED_MODELS else small_model)(name, work, data_dir)

    def teacher(x):
        return np.asarray(model(x, training=False))

    reference = np.concatenate([teacher(x_val[i : i + 250]) for i in range(0, len(x_val), 250)]).argmax(1)
    calibration = x_train[np.random.default_rng(0).choice(len(x_train), CALIBRATION, replace=False)]
    recipes = {}
    for recipe, fields in RECIPES.items():
        print(f"{name}: {recipe}", file=sys.stderr, flush=True)
        settings = FineTuneSettings(**{**{k: v for k, v in fields.items() if k != "weight_levels"}, "epochs": epochs,
                                       "patience": epochs})
        start = time.perf_counter()
        try:
            _, record = fine_tune(model, x_train, calibration, settings, teacher, validation=(x_val, reference),
                                  weight_levels=fields.get("weight_levels", 127))
        except ConversionError as e:  # the loss went non-finite
            recipes[recipe] = {"settings": fields, "error": str(e), "seconds": round(time.perf_counter() - start, 1)}
            continue
        rows = record["epochs"]
        best = max(rows[1:], key=lambda r: r["validation_agreement"])
        recipes[recipe] = {"settings": fields, "kept_epoch": record["kept_epoch"],
                           "seconds": round(time.perf_counter() - start, 1),
                           "epochs": [{k: r.get(k) for k in ("epoch", "validation_agreement", "distillation_loss",
                                                             "agreement_minus_own_ci_points")} for r in rows],
                           "best_epoch": best["epoch"]}
    return {"train": train, "training_images": int(len(x_train)),
            "validation": f"MNIST training images {VAL_FIRST:,}-{VAL_FIRST + VAL_IMAGES - 1:,} ({VAL_IMAGES:,}, never "
                          "trained on)", "recipes": recipes}


def _points(x: float) -> str:
    return f"{x:+.2f}"


def _table(m: dict) -> list[str]:
    epochs = max(len(r.get("epochs", [])) for r in m["recipes"].values()) - 1
    lines = ["| recipe | " + " | ".join(f"epoch {e}" for e in range(epochs + 1))
             + " | best epoch - epoch 0, points (95% CI) | kept by fine-tuning's rule | s |",
             "|---|" + "---:|" * (epochs + 1) + "---|---|---:|"]
    for recipe, r in m["recipes"].items():
        if "error" in r:
            lines.append(f"| {recipe} | " + " | ".join(["-"] * (epochs + 1)) + f" | {r['error']} | - | {r['seconds']:.0f} |")
            continue
        rows = r["epochs"]
        best = rows[r["best_epoch"]]
        lo, hi = best["agreement_minus_own_ci_points"]
        gain = 100 * (best["validation_agreement"] - rows[0]["validation_agreement"])
        kept = "the model's own weights" if r["kept_epoch"] == 0 else f"epoch {r['kept_epoch']}"
        lines.append(f"| {recipe} | " + " | ".join(f"{100 * x['validation_agreement']:.2f}%" for x in rows)
                     + f" | epoch {r['best_epoch']}: {_points(gain)} ({_points(lo)} to {_points(hi)}) | {kept} | "
                     f"{r['seconds']:.0f} |")
    return lines


def _summary(doc: dict) -> list[str]:
    """What the tables show, counted from the JSON."""
    beyond, worse, runs = [], [], 0
    for name, m in doc["models"].items():
        for recipe, r in m["recipes"].items():
            if "error" in r:
                continue
            runs += 1
            lo, hi = r["epochs"][r["best_epoch"]]["agreement_minus_own_ci_points"]
            (beyond if lo > 0 else worse if hi < 0 else []).append(f"{recipe} on {name}")
    return [f"**What the tables show.** Of {runs} recipe runs, {len(beyond)} had an epoch that agrees with the float "
            "model on more validation images beyond noise" + (f" ({'; '.join(beyond)})" if beyond else "")
            + f"; in {len(worse)} even the best epoch agrees on fewer beyond noise ({'; '.join(worse) or 'none'})."]


def markdown(doc: dict) -> str:
    lines = ["# Fine-tuning recipes on small-data and planted models", "",
             "Written by `python benchmarks/finetune_recipes.py` (each model's command below) from "
             "[results/finetune-recipes.json](results/finetune-recipes.json). "
             "Each recipe fine-tunes the model toward its own float logits through toolkit/quantize/finetune.py's int8 "
             "simulation (what `--fine-tune` trains through); the figures are the simulated int8 model's agreement "
             "with the float model on validation images the model never trained on, after every epoch (epoch 0: the "
             "model's own weights). The interval is the paired 95% interval of the best epoch's gain over epoch 0 "
             "(at 1 - 0.05/epochs, as fine-tuning judges its epochs); fine-tuning keeps an epoch only where that "
             "interval is above zero. Choosing the best epoch on the same images flatters it: a gain that is not "
             "beyond noise here is none.", ""]
    lines += [*_summary(doc), ""]
    for name, m in doc["models"].items():
        measured = f" ({provenance_line(m['provenance']).rstrip('.')})" if "provenance" in m else ""
        lines += [f"## {name}", "", f"Measured by `{m['command']}`{measured}; {m['training_images']:,} training "
                  f"images; validation: {m['validation']}.",
                  "", *_table(m), ""]
    if any("provenance" not in m for m in doc["models"].values()):
        lines += [provenance_line(doc["provenance"]), ""]
    return "\n".join(lines)


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--work", type=Path, default=Path("/tmp/toolkit-finetune"))
    p.add_argument("--models", nargs="+", default=list(MODELS))
    p.add_argument("--epochs", type=int, default=4)
    per_model_main(p, "finetune_recipes.py", "finetune-recipes.json", "FINETUNE_RECIPES.md", markdown,
                   lambda name, args, data_dir: measure(name, args.work, data_dir, args.epochs))


if __name__ == "__main__":
    main()
