"""int8 activation ranges (toolkit/ranges.py): the estimators on known numbers, and end to end on a model
whose one activation tensor has a rare spike: the global min/max gives every image a few int8 steps,
the default (chosen on the validation split) does not, and parity on the test set says so."""

from __future__ import annotations

import json

import numpy as np
import pytest

from toolkit import ranges


def _stats(maxs, mins=None):
    s = ranges.Stats()
    for i, hi in enumerate(maxs):
        lo = 0.0 if mins is None else mins[i]
        s.add("t", np.array([lo, hi / 2, hi], np.float32))
    return s


def test_estimators_on_known_numbers():
    s = _stats([1.0, 2.0, 3.0, 100.0])  # one image reaches 100; the median image 2.5
    assert s.ranges("minmax")["t"] == (0.0, 100.0)
    assert s.ranges("mean-minmax")["t"] == (0.0, pytest.approx(26.5))
    assert s.ranges("tail-aware")["t"] == (0.0, pytest.approx(26.5))  # 100 > 4 x 2.5: the tail is clipped
    assert s.tails() == {"t": 40.0}
    mild = _stats([1.0, 2.0, 3.0, 4.0])  # 4 < 4 x 2.5: no tail, the global range kept
    assert mild.ranges("tail-aware")["t"] == (0.0, 4.0) and not mild.tails()
    assert ranges.estimators_for("auto", mild) == ("minmax",)
    assert ranges.estimators_for("auto", s) == ranges.ESTIMATORS
    assert ranges.estimators_for("mean-minmax", mild) == ("mean-minmax",)
    negative = _stats([1.0, 1.0, 1.0], mins=[-1.0, -1.0, -50.0])
    assert negative.ranges("tail-aware")["t"][0] == pytest.approx(-52 / 3)  # the low side's tail too
    # ... and `auto` sees it: a long negative tail alone makes every estimator a candidate (the issue's
    # minima {-1, -1, -1, -1, -50} stayed on the global -50..1 when only maxima were looked at)
    low = _stats([1.0] * 5, mins=[-1.0, -1.0, -1.0, -1.0, -50.0])
    assert low.tails() == {"t": 50.0} and ranges.estimators_for("auto", low) == ranges.ESTIMATORS
    assert low.ranges("minmax")["t"] == (-50.0, 1.0) and low.ranges("tail-aware")["t"] == (pytest.approx(-10.8), 1.0)


def test_batched_statistics_are_per_image():
    s = ranges.Stats()
    s.add("t", np.array([[0.0, 1.0], [0.0, 9.0]], np.float32), batched=True)
    assert s.maxs["t"] == [1.0, 9.0] and s.ranges("mean-minmax")["t"] == (0.0, 5.0)
    s.add("ints", np.array([1, 2, 3]))  # not an activation
    assert s.names() == ["t"]


def test_choose_keeps_tail_aware_unless_another_agrees_more_beyond_noise():
    """Three images of 200 more is noise (the paired interval of the difference, 95% over the two comparisons,
    reaches below zero): tail-aware is kept though minmax's point figure is higher; 30 more is not noise."""
    from toolkit.accuracy_control import Validation

    reference = np.arange(200) % 10
    val = Validation(np.zeros((200, 1), np.float32), reference.copy(), reference, "200 images")

    def wrong_on(k: int) -> np.ndarray:
        predicted = reference.copy()
        predicted[:k] = (predicted[:k] + 1) % 10
        return predicted

    def run(wrong: dict[str, int]) -> tuple[str, dict]:
        return ranges.choose({name: name.encode() for name in wrong},
                             lambda content, images: wrong_on(wrong[content.decode()]), val)

    best, figures = run({"minmax": 10, "mean-minmax": 13, "tail-aware": 13})
    assert best == "tail-aware" and figures["minmax"]["agreement"] == 0.95 > figures["tail-aware"]["agreement"]
    lo, hi = figures["minmax"]["agreement_minus_default_ci_points"]
    assert lo < 0 < 1.5 < hi
    best, figures = run({"minmax": 40, "mean-minmax": 10, "tail-aware": 40})
    assert best == "mean-minmax" and figures["mean-minmax"]["agreement_minus_default_ci_points"][0] > 0
    best, _ = run({"minmax": 10, "mean-minmax": 40, "tail-aware": 40})  # beyond noise, in either place
    assert best == "minmax"
    assert run({"minmax": 40, "mean-minmax": 40})[0] == "minmax"  # no tail-aware: the first is the default


# ----------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def spiked_model(tmp_path_factory, mnist):
    """An MLP whose hidden tensor carries one extra unit that fires x500 on a pixel inked in about 1-3% of
    images and is read by nothing (its logit weights are 0): the float model is the MLP's, but the tensor's
    global max is set by the rare spike."""
    import keras

    x, y = mnist.train.images[:20000], mnist.train.labels[:20000]
    flat = x.reshape(len(x), -1)
    inked = (flat > 0.5).mean(0)
    pixel = int(np.flatnonzero((inked > 0.01) & (inked < 0.03))[0])
    keras.utils.set_random_seed(0)
    inp = keras.Input((28, 28, 1), name="image")
    f = keras.layers.Flatten()(inp)
    h = keras.layers.Dense(64, activation="relu", name="hidden")(f)
    spike = keras.layers.Dense(1, activation="relu", name="spike", trainable=False)(f)
    both = keras.layers.Concatenate(name="features")([h, spike])
    out = keras.layers.Dense(10, name="logits")(both)
    model = keras.Model(inp, out)
    model.get_layer("spike").set_weights([np.eye(784, 1, -pixel, dtype=np.float32) * 500.0, np.zeros(1, np.float32)])
    model.compile(keras.optimizers.Adam(2e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=2, batch_size=128, verbose=0)
    w, b = model.get_layer("logits").get_weights()
    w[-1] = 0.0  # the spike moves no logit: only its range matters
    model.get_layer("logits").set_weights([w, b])
    path = tmp_path_factory.mktemp("spiked") / "model.keras"
    model.save(path)
    return path


def _export(model, exports, data_dir, *extra):
    from toolkit.cli import main

    assert main(["export", "--model", str(model), "--exports", str(exports), "--data-dir", str(data_dir),
                 "--format", "tflite", "onnx", "--quantize", "int8", "--quiet", *extra]) == 0
    return json.loads((exports / "manifest.json").read_text())


def test_a_rare_spike_is_clipped_by_the_default_and_parity_shows_the_gain(spiked_model, tmp_path, data_dir):
    from toolkit.cli import main

    auto = _export(spiked_model, tmp_path / "auto", data_dir)
    for entry in auto["artifacts"]:  # the choice, made on the validation split, is in the manifest
        choice = entry["calibration"]
        assert choice["estimator"] in ("mean-minmax", "tail-aware"), choice
        assert "validation split" in choice["chosen_on"] and choice["long_tails"]["tensors"] >= 1
        cands = choice["candidates"]
        assert cands[choice["estimator"]]["agreement"] > cands["minmax"]["agreement"]
    minmax = _export(spiked_model, tmp_path / "minmax", data_dir, "--calibration-method", "minmax")
    assert all(e["calibration"]["estimator"] == "minmax" for e in minmax["artifacts"])
    results = {}
    for name in ("auto", "minmax"):
        main(["parity", "--exports", str(tmp_path / name), "--data-dir", str(data_dir), "--quiet"])
        results[name] = json.loads((tmp_path / name / "parity.json").read_text())["variants"]
    for variant in ("tflite-int8", "onnx-int8"):  # the test set agrees with the validation split's choice
        assert results["auto"][variant]["agreement"] > results["minmax"][variant]["agreement"] + 0.01
        assert results["auto"][variant]["verdict"] == "pass", results["auto"][variant]
