import gzip

import numpy as np
import pytest

from toolkit import data
from toolkit.errors import DataError


def test_splits_shapes_and_ranges(mnist):
    assert mnist.train.images.shape == (55_000, 28, 28, 1)
    assert mnist.validation.images.shape == (5_000, 28, 28, 1)
    assert mnist.test.images.shape == (10_000, 28, 28, 1)
    for split in (mnist.train, mnist.validation, mnist.test):
        assert split.images.dtype == np.float32
        assert split.images.min() == 0.0 and split.images.max() == 1.0
        assert set(np.unique(split.labels)) == set(range(10))
    assert len(mnist.sha256) == 4


def test_validation_is_the_first_5000_training_images(data_dir, mnist):
    raw = data.read_idx(data_dir / "train-labels-idx1-ubyte.gz", 2049, 60_000)
    np.testing.assert_array_equal(mnist.validation.labels, raw[:5000])
    np.testing.assert_array_equal(mnist.train.labels, raw[5000:])


def test_env_var_is_used(monkeypatch, data_dir):
    monkeypatch.setenv(data.ENV_VAR, str(data_dir))
    assert data.resolve_data_dir(None) == data_dir


def test_flag_wins_over_env_var(monkeypatch, data_dir, tmp_path):
    monkeypatch.setenv(data.ENV_VAR, str(tmp_path / "nowhere"))
    assert data.resolve_data_dir(data_dir) == data_dir


def test_missing_dir(tmp_path):
    with pytest.raises(DataError, match="does not exist.*--data-dir"):
        data.load_mnist(tmp_path / "nope")


def _copy_dataset(data_dir, dest):
    dest.mkdir()
    for name, _, _ in data.FILES.values():
        (dest / name).write_bytes((data_dir / name).read_bytes())
    return dest


def test_missing_file(data_dir, tmp_path):
    d = _copy_dataset(data_dir, tmp_path / "m")
    (d / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.gz.*not found"):
        data.load_mnist(d)


def test_truncated_gzip(data_dir, tmp_path):
    d = _copy_dataset(data_dir, tmp_path / "m")
    f = d / "t10k-images-idx3-ubyte.gz"
    f.write_bytes(f.read_bytes()[:5000])
    with pytest.raises(DataError, match="t10k-images.*(gzip|truncated)"):
        data.load_mnist(d)


def test_truncated_payload(data_dir, tmp_path):
    d = _copy_dataset(data_dir, tmp_path / "m")
    f = d / "t10k-labels-idx1-ubyte.gz"
    raw = gzip.decompress(f.read_bytes())
    f.write_bytes(gzip.compress(raw[:-10]))
    with pytest.raises(DataError, match="truncated or corrupt"):
        data.load_mnist(d)


def test_wrong_magic(data_dir, tmp_path):
    d = _copy_dataset(data_dir, tmp_path / "m")
    f = d / "t10k-labels-idx1-ubyte.gz"
    raw = bytearray(gzip.decompress(f.read_bytes()))
    raw[0:4] = (2051).to_bytes(4, "big")  # an images magic in a labels file
    f.write_bytes(gzip.compress(bytes(raw)))
    with pytest.raises(DataError, match="magic number 2051, expected 2049"):
        data.load_mnist(d)


def test_wrong_count(data_dir, tmp_path):
    d = _copy_dataset(data_dir, tmp_path / "m")
    f = d / "t10k-labels-idx1-ubyte.gz"
    raw = bytearray(gzip.decompress(f.read_bytes()))
    raw[4:8] = (9_999).to_bytes(4, "big")
    f.write_bytes(gzip.compress(bytes(raw[:-1])))
    with pytest.raises(DataError, match="9999 items, expected 10000"):
        data.load_mnist(d)


def test_not_gzip(data_dir, tmp_path):
    d = _copy_dataset(data_dir, tmp_path / "m")
    (d / "train-labels-idx1-ubyte.gz").write_bytes(b"not a gzip file at all")
    with pytest.raises(DataError, match="not a readable gzip"):
        data.load_mnist(d)


def test_calibration_indices_fixed_and_distinct():
    a = data.calibration_indices(300, seed=0)
    np.testing.assert_array_equal(a, data.calibration_indices(300, seed=0))
    assert len(set(a.tolist())) == 300 and a.max() < 55_000
    assert not np.array_equal(a, data.calibration_indices(300, seed=1))


def test_no_data_and_no_network_says_how_to_provide_it(monkeypatch):
    """Without --data-dir or TOOLKIT_DATA_DIR the Keras download is tried; offline it fails
    with one line naming both ways to provide the files."""
    from toolkit._quiet import keras

    def offline():
        raise OSError("URL fetch failure: network unreachable")

    monkeypatch.delenv(data.ENV_VAR, raising=False)
    monkeypatch.setattr(keras().datasets.mnist, "load_data", offline)
    with pytest.raises(DataError, match="Keras download failed.*network unreachable.*--data-dir.*TOOLKIT_DATA_DIR"):
        data.load_mnist(None)
