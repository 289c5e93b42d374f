"""Datasets and models a user brings, made the way a user makes them: images written with
Pillow into class folders or arrays saved with ``np.savez``, Keras models built and trained
with plain Keras. Small and fixed-seed, so tests stay fast and repeatable.

The images: class k has a bright blob in grid cell k (a few pixels of jitter, random
brightness) on a noisy background, so a small model learns them in a few epochs with wide
margins (int8 rounding then does not move a prediction).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np


def make_images(n: int, classes: int, size: int = 16, channels: int = 1, seed: int = 0):
    """uint8 images (n, size, size, channels) and int64 labels."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % classes
    rng.shuffle(labels)
    grid = math.ceil(math.sqrt(classes))
    cell = size // grid
    images = rng.integers(0, 50, size=(n, size, size, channels)).astype(np.uint8)
    for i, k in enumerate(labels):
        r, c = divmod(int(k), grid)
        y = r * cell + int(rng.integers(0, max(1, cell - 3)))
        x = c * cell + int(rng.integers(0, max(1, cell - 3)))
        colour = rng.integers(170, 256, size=channels) if channels == 3 else [int(rng.integers(170, 256))]
        images[i, y : y + 3, x : x + 3, :] = colour
    return images, labels.astype(np.int64)


def write_folder(root: Path, class_names: list[str], per_class_train: int, per_class_test: int,
                 size: int = 16, channels: int = 1, seed: int = 0, split: bool = True, ext: str = ".png") -> Path:
    """DIR/train/<class>/*.png and DIR/test/<class>/*.png (or DIR/<class>/... when not ``split``)."""
    from PIL import Image

    k = len(class_names)
    parts = {"train": per_class_train, "test": per_class_test} if split else {"": per_class_train + per_class_test}
    for s, (part, per_class) in enumerate(parts.items()):
        images, labels = make_images(per_class * k, k, size, channels, seed=seed + s)
        for i, (img, label) in enumerate(zip(images, labels, strict=True)):
            d = root / part / class_names[label] if part else root / class_names[label]
            d.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img[..., 0] if channels == 1 else img, "L" if channels == 1 else "RGB").save(
                d / f"{i:05d}{ext}")
    return root


def write_npz(path: Path, classes: int, n_train: int, n_test: int, size: int = 16, channels: int | None = None,
              class_names: list[str] | None = None, seed: int = 0) -> Path:
    """x_train, y_train, x_test, y_test (+ class_names); ``channels=None`` stores (N, H, W) like mnist.npz."""
    xtr, ytr = make_images(n_train, classes, size, channels or 1, seed)
    xte, yte = make_images(n_test, classes, size, channels or 1, seed + 1)
    if channels is None:
        xtr, xte = xtr[..., 0], xte[..., 0]
    arrays = {"x_train": xtr, "y_train": ytr, "x_test": xte, "y_test": yte}
    if class_names:
        arrays["class_names"] = np.array(class_names)
    np.savez_compressed(path, **arrays)
    return path


def fit(model, x: np.ndarray, y: np.ndarray, epochs: int = 15, seed: int = 0, from_logits: bool = True):
    """Plain Keras training, as a user would do it."""
    from toolkit._quiet import keras

    k = keras()
    k.utils.set_random_seed(seed)
    model.compile(optimizer=k.optimizers.Adam(3e-3),
                  loss=k.losses.SparseCategoricalCrossentropy(from_logits=from_logits), metrics=["accuracy"])
    model.fit(x, y, epochs=epochs, batch_size=32, verbose=0)
    return model


def _fit(net, x: np.ndarray, labels: np.ndarray, steps: int, lr: float) -> None:
    """``steps`` Adam steps of 64 fixed-seed images (NCHW) with cross-entropy; the network left in eval mode."""
    import torch

    opt = torch.optim.Adam(net.parameters(), lr)
    rng = np.random.default_rng(0)
    for _ in range(steps):
        j = rng.integers(0, len(x), 64)
        loss = torch.nn.functional.cross_entropy(net(torch.from_numpy(x[j])), torch.from_numpy(labels[j]))
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()


def torch_mnist_net(root: Path, images: np.ndarray, labels: np.ndarray, steps: int = 300) -> tuple[Path, Path]:
    """A small PyTorch CNN (conv, depthwise and pointwise convs with hard-swish, max-pool, dense: as MobileNets are
    written) trained ``steps`` Adam steps on MNIST (N, 28, 28, 1) images, fixed seed; saved as ``root/net.pt2``
    (torch.export.save, dynamic batch) and exported by PyTorch's own ONNX exporter as ``root/net.onnx`` (NCHW
    input, its weights in ``net.onnx.data`` beside it)."""
    import torch

    class SmallNet(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = torch.nn.Conv2d(1, 16, 3, padding=1, stride=2)
            self.depthwise = torch.nn.Conv2d(16, 16, 3, padding=1, groups=16)
            self.pointwise = torch.nn.Conv2d(16, 32, 1)
            self.head = torch.nn.Linear(32 * 7 * 7, 10)

        def forward(self, x):
            x = torch.relu(self.stem(x))
            x = torch.nn.functional.max_pool2d(torch.nn.functional.hardswish(self.pointwise(self.depthwise(x))), 2)
            return self.head(torch.flatten(x, 1))

    torch.manual_seed(0)
    x = np.ascontiguousarray(np.transpose(images, (0, 3, 1, 2)))  # PyTorch's layout
    net = SmallNet()
    _fit(net, x, labels, steps, 3e-3)
    example = (torch.from_numpy(x[:2]),)
    batch = ({0: torch.export.Dim("batch")},)
    root.mkdir(parents=True, exist_ok=True)
    torch.export.save(torch.export.export(net, example, dynamic_shapes=batch), root / "net.pt2")
    torch.onnx.export(net, example, str(root / "net.onnx"), dynamo=True, dynamic_shapes=batch, external_data=True)
    return root / "net.pt2", root / "net.onnx"


def torch_outlier_mlp(root: Path, images: np.ndarray, labels: np.ndarray, steps: int = 400,
                      scale: float = 1000.0) -> Path:
    """A PyTorch MLP (dense 128 relu, dense 10) trained ``steps`` Adam steps on MNIST, fixed seed, whose hidden
    unit the median image uses most is scaled ``scale`` times (incoming weights and bias x scale, outgoing / scale:
    ReLU is positively homogeneous, so the float model computes the same function). Per-tensor int8 activations
    then leave the other hidden channels a few steps: plain int8 loses most of the accuracy and only a wider
    activation type or float for the layer reading that tensor keeps it. Saved as ``root/mlp.pt2``."""
    import torch

    torch.manual_seed(0)
    x = np.ascontiguousarray(np.transpose(images, (0, 3, 1, 2)))
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(x[0].size, 128), torch.nn.ReLU(),
                              torch.nn.Linear(128, 10))
    _fit(net, x, labels, steps, 1e-3)
    hidden, logits = net[1], net[3]
    with torch.no_grad():
        active = torch.relu(hidden(torch.from_numpy(x[:2000]).flatten(1)))
        unit = int(torch.argmax(torch.median(active, dim=0).values))
        hidden.weight[unit] *= scale
        hidden.bias[unit] *= scale
        logits.weight[:, unit] /= scale
    root.mkdir(parents=True, exist_ok=True)
    example = (torch.from_numpy(x[:2]),)
    program = torch.export.export(net, example, dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(program, root / "mlp.pt2")
    return root / "mlp.pt2"
