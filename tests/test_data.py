import gzip

import numpy as np
import pytest

from toolkit.datasets import mnist as mnist_source
from toolkit.datasets import open_dataset, sample_indices
from toolkit.errors import DataError


@pytest.fixture(scope="module")
def ds(data_dir):
    return open_dataset("mnist", data_dir=data_dir)


def test_splits_shapes_and_ranges(ds):
    assert (len(ds.train), len(ds.validation), len(ds.test)) == (55_000, 5_000, 10_000)
    assert ds.image_shape == (28, 28, 1) and ds.class_names == tuple("0123456789")
    for split in (ds.train, ds.validation, ds.test):
        images = split.read(np.arange(0, len(split), 97))
        assert images.dtype == np.uint8 and images.shape[1:] == (28, 28, 1)
        assert images.min() == 0 and images.max() == 255
        assert set(np.unique(split.labels)) == set(range(10))
    assert len(ds.fingerprint["files"]) == 4 and len(ds.fingerprint["sha256"]) == 64


def test_same_pixels_as_a_plain_reading(ds, mnist):
    """Read through the dataset interface and scaled to [0, 1], the images are the seed
    tutorials' float images bit for bit (the seed CNN's path is unchanged)."""
    from toolkit.config import PreprocessOptions
    from toolkit.preprocess import for_training

    prep = for_training(ds, PreprocessOptions())
    idx = np.arange(0, 10_000, 7)
    np.testing.assert_array_equal(prep.load(ds.test, idx), mnist.test.images[idx])
    np.testing.assert_array_equal(prep.load(ds.train, idx), mnist.train.images[idx])
    np.testing.assert_array_equal(ds.validation.labels, mnist.validation.labels)


def test_validation_is_the_first_5000_training_images(data_dir, ds):
    raw = mnist_source.read_idx(data_dir / "train-labels-idx1-ubyte.gz", 2049, 60_000)
    np.testing.assert_array_equal(ds.validation.labels, raw[:5000])
    np.testing.assert_array_equal(ds.train.labels, raw[5000:])


def test_batches_stream_in_order(ds):
    seen = []
    for idx, images in ds.test.batches(3000):
        assert images.shape == (len(idx), 28, 28, 1)
        seen.append(idx)
    assert [len(i) for i in seen] == [3000, 3000, 3000, 1000]
    np.testing.assert_array_equal(np.concatenate(seen), np.arange(10_000))


def test_env_var_is_used(monkeypatch, data_dir):
    monkeypatch.setenv(mnist_source.ENV_VAR, str(data_dir))
    assert mnist_source.resolve_data_dir(None) == data_dir


def test_flag_wins_over_env_var(monkeypatch, data_dir, tmp_path):
    monkeypatch.setenv(mnist_source.ENV_VAR, str(tmp_path / "nowhere"))
    assert mnist_source.resolve_data_dir(data_dir) == data_dir


def test_missing_dir(tmp_path):
    with pytest.raises(DataError, match="does not exist.*--data-dir"):
        open_dataset("mnist", data_dir=tmp_path / "nope")


def _copy_dataset(data_dir, dest):
    dest.mkdir()
    for name, _, _ in mnist_source.FILES.values():
        (dest / name).write_bytes((data_dir / name).read_bytes())
    return dest


def _read_all(d):
    ds = open_dataset("mnist", data_dir=d)
    ds.train.read([0])
    ds.test.read([0])
    return ds


def test_missing_file(data_dir, tmp_path):
    d = _copy_dataset(data_dir, tmp_path / "m")
    (d / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.gz.*not found"):
        _read_all(d)


def test_truncated_gzip(data_dir, tmp_path):
    d = _copy_dataset(data_dir, tmp_path / "m")
    f = d / "t10k-images-idx3-ubyte.gz"
    f.write_bytes(f.read_bytes()[:5000])
    with pytest.raises(DataError, match="t10k-images.*(gzip|truncated)"):
        _read_all(d)


def test_truncated_payload(data_dir, tmp_path):
    d = _copy_dataset(data_dir, tmp_path / "m")
    f = d / "t10k-labels-idx1-ubyte.gz"
    raw = gzip.decompress(f.read_bytes())
    f.write_bytes(gzip.compress(raw[:-10]))
    with pytest.raises(DataError, match="truncated or corrupt"):
        _read_all(d)


def test_wrong_magic(data_dir, tmp_path):
    d = _copy_dataset(data_dir, tmp_path / "m")
    f = d / "t10k-labels-idx1-ubyte.gz"
    raw = bytearray(gzip.decompress(f.read_bytes()))
    raw[0:4] = (2051).to_bytes(4, "big")  # an images magic in a labels file
    f.write_bytes(gzip.compress(bytes(raw)))
    with pytest.raises(DataError, match="magic number 2051, expected 2049"):
        _read_all(d)


def test_wrong_count(data_dir, tmp_path):
    d = _copy_dataset(data_dir, tmp_path / "m")
    f = d / "t10k-labels-idx1-ubyte.gz"
    raw = bytearray(gzip.decompress(f.read_bytes()))
    raw[4:8] = (9_999).to_bytes(4, "big")
    f.write_bytes(gzip.compress(bytes(raw[:-1])))
    with pytest.raises(DataError, match="9999 items, expected 10000"):
        _read_all(d)


def test_not_gzip(data_dir, tmp_path):
    d = _copy_dataset(data_dir, tmp_path / "m")
    (d / "train-labels-idx1-ubyte.gz").write_bytes(b"not a gzip file at all")
    with pytest.raises(DataError, match="not a readable gzip"):
        _read_all(d)


def test_sample_indices_fixed_and_distinct():
    a = sample_indices(300, 55_000, seed=0)
    np.testing.assert_array_equal(a, sample_indices(300, 55_000, seed=0))
    assert len(set(a.tolist())) == 300 and a.max() < 55_000
    assert not np.array_equal(a, sample_indices(300, 55_000, seed=1))


def test_no_data_and_no_network_says_how_to_provide_it(monkeypatch):
    """Without --data-dir or TOOLKIT_DATA_DIR the Keras download is tried; offline it fails
    with one line naming both ways to provide the files."""
    from toolkit._quiet import keras

    def offline():
        raise OSError("URL fetch failure: network unreachable")

    monkeypatch.delenv(mnist_source.ENV_VAR, raising=False)
    monkeypatch.setattr(keras().datasets.mnist, "load_data", offline)
    with pytest.raises(DataError, match="Keras download failed.*network unreachable.*--data-dir.*TOOLKIT_DATA_DIR"):
        open_dataset("mnist")


def test_a_named_validation_split_is_used_and_said_to_be_unseen(tmp_path):
    """x_val/y_val in an .npz, and a val/ folder beside train/ and test/, are the validation split (images the
    model never trained on): the training split keeps every training image. Without them a fixed-seed 10% of
    the training images are the validation split, and the dataset says the model may have seen them."""
    from PIL import Image

    from toolkit.datasets.base import validation_note

    rng = np.random.default_rng(0)
    x = lambda n: rng.integers(0, 256, (n, 8, 8, 3), dtype=np.uint8)  # noqa: E731
    y = lambda n: rng.integers(0, 3, n)  # noqa: E731
    plain = tmp_path / "plain.npz"
    np.savez(plain, x_train=x(50), y_train=y(50), x_test=x(10), y_test=y(10))
    ds = open_dataset(str(plain))
    assert (len(ds.train), len(ds.validation)) == (45, 5) and not ds.validation_named
    assert "has seen these" in validation_note(ds) and "x_val/y_val" in validation_note(ds)
    named = tmp_path / "named.npz"
    xv, yv = x(7), np.array([0, 1, 2, 0, 1, 2, 0])
    np.savez(named, x_train=x(50), y_train=y(50), x_val=xv, y_val=yv, x_test=x(10), y_test=y(10))
    ds = open_dataset(str(named))
    assert (len(ds.train), len(ds.validation)) == (50, 7) and ds.validation_named and validation_note(ds) is None
    assert np.array_equal(ds.validation.read(), xv) and np.array_equal(ds.validation.labels, yv)
    assert ds.describe()["splits"]["validation_named"] is True
    half = tmp_path / "half.npz"
    np.savez(half, x_train=x(5), y_train=y(5), x_val=x(2), x_test=x(2), y_test=y(2))
    with pytest.raises(DataError, match="x_val without y_val"):
        open_dataset(str(half))

    root = tmp_path / "folder"
    for split, n in (("train", 6), ("val", 3), ("test", 3)):
        for c in ("a", "b"):
            (root / split / c).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)).save(root / split / c / f"{i}.png")
    ds = open_dataset(str(root))
    assert (len(ds.train), len(ds.validation), len(ds.test)) == (12, 6, 6) and ds.validation_named
    assert "val/" in ds.split_rule


def test_mnist_validation_is_apart_from_what_toolkit_train_fits(ds):
    assert ds.validation_named and len(ds.validation) == 5000 and len(ds.train) == 55000
