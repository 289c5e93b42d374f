import json

import pytest

from toolkit.config import TrainConfig
from toolkit.errors import UsageError
from toolkit.exportdir import ExportDir
from toolkit.train import train


def test_quick_training_record(quick_model):
    out, record = quick_model
    assert (out / "model.keras").is_file()
    # (the record is train.json as conftest.py reads it: test_same_seed... checks train() returns what it writes)
    assert record["test_accuracy"] >= 0.96  # issue: --epochs 1 --train-limit 12000 reaches >= 96%
    assert record["data"]["train_images"] == 12_000
    assert record["model"]["parameters"] == 3_274_634
    assert len(record["model"]["weights_sha256"]) == 64
    assert [e["epoch"] for e in record["epochs"]] == [1]
    assert {"loss", "accuracy", "val_loss", "val_accuracy"} <= set(record["epochs"][0])
    prov = record["provenance"]
    assert prov["versions"]["tensorflow"] and prov["machine"]["cpu_count"]
    assert record["hyperparameters"]["seed"] == 0


def test_same_seed_same_weights_different_seed_different(tmp_path, data_dir):
    def run(seed, name):
        # the MLP (dropout and initialization both draw from the seed): the CNN's 10,000 test images cost ~10 s a run
        cfg = TrainConfig.for_arch("mlp", out=tmp_path / name, data_dir=data_dir, epochs=1, train_limit=500,
                                   seed=seed, verbose=False)
        record = train(cfg)
        assert json.loads(ExportDir(cfg.out).train_path.read_text()) == json.loads(json.dumps(record))
        return record["model"]["weights_sha256"]

    first = run(7, "a")
    assert run(7, "b") == first
    assert run(8, "c") != first


@pytest.mark.parametrize("field,value", [("epochs", 0), ("batch_size", 0), ("learning_rate", 0.0),
                                         ("train_limit", 0), ("dropout", 1.0)])
def test_invalid_settings(tmp_path, data_dir, field, value):
    with pytest.raises(UsageError):
        train(TrainConfig(out=tmp_path, data_dir=data_dir, **{field: value}))


def test_bf16_training_saves_a_float32_model_whose_figures_are_float32(tmp_path, data_dir, mnist, monkeypatch):
    """bf16 compute with float32 weights; the saved model computes in float32, and the recorded test
    accuracy is that model's, as an evaluation with no toolkit code finds it."""
    import numpy as np

    from toolkit._quiet import keras

    def run(name):  # the MLP: this CPU may emulate bf16, which makes the CNN's test evaluation ~20 s a run
        return train(TrainConfig.for_arch("mlp", out=tmp_path / name, data_dir=data_dir, epochs=1, train_limit=500,
                                          precision="bf16", verbose=False))

    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    record = run("a")
    assert record["hyperparameters"]["precision"] == "bf16"
    assert run("b")["model"]["weights_sha256"] == record["model"]["weights_sha256"]  # still deterministic
    # and reproducible to the byte, in one process too (no per-process optimizer counter in the archive)
    assert (tmp_path / "a" / "model.keras").read_bytes() == (tmp_path / "b" / "model.keras").read_bytes()
    model = keras().saving.load_model(tmp_path / "a" / "model.keras", compile=False)
    assert {layer.dtype_policy.name for layer in model.layers} == {"float32"}
    assert keras().mixed_precision.global_policy().name == "float32"  # restored for whatever runs next
    logits = model(mnist.test.images, training=False).numpy()
    assert logits.dtype == np.float32
    assert float((logits.argmax(1) == mnist.test.labels).mean()) == pytest.approx(record["test_accuracy"], abs=1e-6)


def test_auto_precision_is_bf16_only_where_the_cpu_computes_it(monkeypatch):
    """The seed CNN's default precision is auto: bf16 where AVX512_BF16 or AMX is detected, float32 elsewhere
    (emulated bf16 made the default training many times slower on an AVX2-only CPU); train.json says why."""
    from toolkit import provenance
    from toolkit.model import ARCHITECTURES
    from toolkit.train import resolve_precision

    assert ARCHITECTURES["cnn"].precision == "auto"
    monkeypatch.setattr(provenance, "cpu_flags", lambda: ["avx2", "fma"])
    assert resolve_precision("auto") == ("float32", "auto: no AVX512_BF16 or AMX detected, where bf16 would be emulated")
    monkeypatch.setattr(provenance, "cpu_flags", lambda: ["avx2", "avx512f", "avx512_bf16"])
    assert resolve_precision("auto") == ("bf16", "auto: the CPU has AVX512_BF16")
    assert resolve_precision("float32") == ("float32", None) and resolve_precision("bf16") == ("bf16", None)


def test_precision_must_be_float32_or_bf16(tmp_path, data_dir):
    with pytest.raises(UsageError, match="--precision"):
        train(TrainConfig(out=tmp_path, data_dir=data_dir, precision="fp16"))
