"""Learned weight rounding (AdaRound) and bias correction: does it make the simulated int8 model agree with the
float model on more images the model never saw (issue #35)?

    python benchmarks/learned_rounding.py [--work /tmp/toolkit-finetune] [--models dead-channel-cnn ...]
                                          [--from-json]

Models: benchmarks/finetune_recipes.py's small-data MobileNetV2 and EfficientNetB0 (keras.applications,
weights=None, 32x32 RGB MNIST, 2,000 training images), and a small CNN trained on MNIST training images
5,000-34,999 with one dead ReLU channel whose outgoing weights are 60 times the next layer's largest (a weight
that never meets a non-zero input keeps whatever value it had; here planted): its per-channel int8 grids are
coarse for every other weight, the case learned rounding is for. For each, toolkit/quantize/rounding.py's
``learn_rounding`` with its default settings on 500 fixed-seed training images (the export's calibration sample
size), on each exporter grid (-127..127: tflite-int8 and tflite-micro; -64..64: onnx-int8, onnxruntime's 7-bit
weights), and ``judge``: the simulated int8 model's agreement with the float model on 2,000 MNIST training images
40,000-41,999 (never trained on; the test set is not read), the model's own weights against the learned rounding,
paired 95% interval. Writes results/learned-rounding.json and LEARNED_ROUNDING.md (every number from the JSON).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from _common import mnist_array, parser, per_model_main, provenance_line

MODELS = ("dead-channel-cnn", "mobilenetv2-small", "efficientnetb0-small")
GRIDS = {127: "tflite-int8, tflite-micro", 64: "onnx-int8"}
CALIBRATION = 500
PLANTED = 60.0
# the planted models: name -> how many times conv2's largest weight the dead channel's outgoing weights are
PLANTED_MODELS = {"dead-channel-cnn": PLANTED, "dead-channel-cnn-200x": 200.0}


def dead_channel_cnn(data_dir: Path, path: Path, factor: float = PLANTED) -> dict:
    """The small CNN (tests/test_rounding.py builds the same): conv 16 - pool - conv 32 - pool - dense 10, two
    epochs on MNIST training images 5,000-34,999; conv1's channel 0 made dead (bias -100) and conv2's weights from
    it set to +-``factor`` times conv2's largest per output channel."""
    import keras
    import numpy as np
    from keras import layers

    x = mnist_array(data_dir, "train_images")[..., None].astype(np.float32) / 255.0
    y = mnist_array(data_dir, "train_labels")
    keras.utils.set_random_seed(0)
    inp = keras.Input((28, 28, 1), name="image")
    h = layers.MaxPooling2D()(layers.Conv2D(16, 3, activation="relu", name="conv1")(inp))
    h = layers.MaxPooling2D()(layers.Conv2D(32, 3, activation="relu", name="conv2")(h))
    model = keras.Model(inp, layers.Dense(10, name="logits")(layers.Flatten()(h)))
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x[5000:35000], y[5000:35000], epochs=2, batch_size=64, verbose=0)
    plant_dead_channel(model, factor)
    model.save(path)
    return {"images": "MNIST training images 5,000-34,999", "epochs": 2, "planted": factor}


def plant_dead_channel(model, factor: float = PLANTED) -> None:
    import numpy as np

    w, b = model.get_layer("conv1").get_weights()
    b[0] = -100.0
    model.get_layer("conv1").set_weights([w, b])
    w, b = model.get_layer("conv2").get_weights()
    signs = np.sign(np.random.default_rng(0).normal(size=w[:, :, 0, :].shape))
    w[:, :, 0, :] = factor * np.abs(w).max((0, 1, 2)) * signs
    model.get_layer("conv2").set_weights([w, b])


def planted_model(name: str, work: Path, data_dir: Path):
    """(the planted model ``name`` (PLANTED_MODELS), trained into ``work`` on first use; its training images and the
    validation images (MNIST training images VAL_FIRST.., never trained on) in [0, 1]; the training record, None
    when the model was already there)."""
    import keras
    import numpy as np
    from finetune_recipes import VAL_FIRST, VAL_IMAGES

    from toolkit import schema

    path = work / name / schema.MODEL
    x = mnist_array(data_dir, "train_images")[..., None].astype(np.float32) / 255.0
    train = None
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        train = dead_channel_cnn(data_dir, path, PLANTED_MODELS[name])
    return keras.models.load_model(path), x[5000:35000], x[VAL_FIRST : VAL_FIRST + VAL_IMAGES], train


def measure(name: str, work: Path, data_dir: Path) -> dict:
    import numpy as np
    from finetune_recipes import VAL_FIRST, VAL_IMAGES, small_model

    from toolkit.quantize.rounding import RoundingSettings, judge, learn_rounding

    model, x_train, x_val, train = (planted_model if name in PLANTED_MODELS else small_model)(name, work, data_dir)
    reference = np.concatenate([np.asarray(model(x_val[i : i + 250], training=False))
                                for i in range(0, len(x_val), 250)]).argmax(1)
    calibration = x_train[np.random.default_rng(0).choice(len(x_train), CALIBRATION, replace=False)]
    grids = {}
    for levels, variants in GRIDS.items():
        print(f"{name}: grid -{levels}..{levels}", file=sys.stderr, flush=True)
        start = time.perf_counter()
        rounded, record = learn_rounding(model, calibration, RoundingSettings(levels=levels))
        seconds = round(time.perf_counter() - start, 1)
        verdict = judge(model, rounded, (x_val, reference), calibration, "auto", levels)
        layers = [r for r in record["layers"] if "kept" in r]
        grids[str(levels)] = {"variants": variants, "seconds": seconds, "judged": verdict,
                              "layers": len(layers), "learned_layers": sum(r["kept"] == "learned" for r in layers),
                              "weights": sum(r["weights"] for r in layers),
                              "rounded_other_way": sum(r["rounded_other_way"] for r in layers)}
    return {"train": train, "validation": f"MNIST training images {VAL_FIRST:,}-{VAL_FIRST + VAL_IMAGES - 1:,} "
                                          f"({VAL_IMAGES:,}, never trained on)", "grids": grids}


def _row(name: str, levels: str, g: dict) -> str:
    j = g["judged"]
    lo, hi = j["learned_minus_own_ci_points"]
    gain = 100 * (j["learned_agreement"] - j["own_agreement"])
    verdict = "better beyond noise" if lo > 0 else "worse beyond noise" if hi < 0 else "within noise"
    return (f"| {name} | -{levels}..{levels} ({g['variants']}) | {100 * j['own_agreement']:.2f}% | "
            f"{100 * j['learned_agreement']:.2f}% | {gain:+.2f} ({lo:+.2f} to {hi:+.2f}) | {verdict} | "
            f"{g['learned_layers']} of {g['layers']} | {g['rounded_other_way']:,} of {g['weights']:,} | "
            f"{g['seconds']:.0f} |")


def markdown(doc: dict) -> str:
    lines = ["# Learned weight rounding", "",
             "Written by `python benchmarks/learned_rounding.py` (each model's command below) from "
             "[results/learned-rounding.json](results/learned-rounding.json). Each row: toolkit/quantize/rounding.py "
             "(`export --learned-rounding`) with its default settings onto one exporter grid, and the simulated int8 "
             "model's agreement with the float model on validation images the model never trained on, with the "
             "model's own weights (rounded to nearest, as the exporters round them) and with the learned rounding; "
             "the paired 95% interval of the difference decides, as `--learned-rounding` does, whether the int8 "
             "files are made from the learned weights. *Layers*: where the learned rounding reproduced the layer's "
             "float output better than rounding to nearest on the fifth of the calibration images it did not learn on "
             "(elsewhere nearest is kept). "
             "*s*: this machine, for learning the rounding of one grid.", "",
             "| model | grid (variants) | own weights | learned rounding | difference, points (95% CI) | verdict | "
             "layers learned | weights rounded the other way | s |",
             "|---|---|---:|---:|---|---|---:|---:|---:|"]
    for name, m in doc["models"].items():
        lines += [_row(name, levels, g) for levels, g in m["grids"].items()]
    lines.append("")
    for name, m in doc["models"].items():
        measured = f" ({provenance_line(m['provenance']).rstrip('.')})" if "provenance" in m else ""
        lines += [f"**{name}**: measured by `{m['command']}`{measured}; validation: {m['validation']}.", ""]
    return "\n".join(lines)


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--work", type=Path, default=Path("/tmp/toolkit-finetune"))
    p.add_argument("--models", nargs="+", default=list(MODELS))
    per_model_main(p, "learned_rounding.py", "learned-rounding.json", "LEARNED_ROUNDING.md", markdown,
                   lambda name, args, data_dir: measure(name, args.work, data_dir))


if __name__ == "__main__":
    main()
