"""The architectures from the MNIST tutorials the project grew from, and nothing else.

Every model takes float32 images (N, H, W, C) named ``image`` and returns logits (N, K) named
``logits``: (28, 28, 1) and 10 for MNIST, the dataset's own image shape and class count for a
user's data (``toolkit train --dataset``). Nothing downstream (export, parity, bench) assumes more.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from toolkit._quiet import keras

INPUT_NAME = "image"
OUTPUT_NAME = "logits"


@dataclass(frozen=True)
class Architecture:
    name: str
    build: Callable  # build(dropout: float | None) -> keras.Model
    description: str
    parameters: int  # checked by the tests
    epochs: int  # default training settings, recorded in the training record
    learning_rate: float
    batch_size: int
    dropout: float | None  # None: the architecture has no dropout
    tutorial_accuracy: float  # what the tutorials report; ours must reach it
    lr_schedule: str = "constant"  # "constant" or "cosine"
    jit_compile: bool = False  # XLA-compile the training step (measured per architecture)
    precision: str = "float32"  # training compute: "float32" or "bf16" (Keras mixed_bfloat16); saved as float32


MNIST_SHAPE = (28, 28, 1)
MNIST_CLASSES = 10


def _inputs(shape):
    return keras().Input(shape=tuple(shape), name=INPUT_NAME)


def build_cnn(dropout: float | None = 0.5, shape=MNIST_SHAPE, classes: int = MNIST_CLASSES, conv2_filters: int = 64):
    """conv 5x5x32 -> maxpool -> conv 5x5x64 -> maxpool -> dense 1024 -> dropout -> dense K (``conv2_filters``:
    a wider or narrower second convolution, what benchmarks/gate.py's slower release is)."""
    layers = keras().layers
    inputs = _inputs(shape)
    x = layers.Conv2D(32, 5, padding="same", activation="relu", name="conv1")(inputs)
    x = layers.MaxPooling2D(2, name="pool1")(x)
    x = layers.Conv2D(conv2_filters, 5, padding="same", activation="relu", name="conv2")(x)
    x = layers.MaxPooling2D(2, name="pool2")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(1024, activation="relu", name="fc1")(x)
    x = layers.Dropout(0.5 if dropout is None else dropout, name="dropout")(x)
    outputs = layers.Dense(classes, name=OUTPUT_NAME)(x)
    return keras().Model(inputs, outputs, name="seed_cnn")


def build_mlp(dropout: float | None = 0.2, shape=MNIST_SHAPE, classes: int = MNIST_CLASSES):
    """flatten -> dense 128 relu -> dropout -> dense K (TensorFlow's beginner quickstart)."""
    layers = keras().layers
    inputs = _inputs(shape)
    x = layers.Flatten(name="flatten")(inputs)
    x = layers.Dense(128, activation="relu", name="fc1")(x)
    x = layers.Dropout(0.2 if dropout is None else dropout, name="dropout")(x)
    outputs = layers.Dense(classes, name=OUTPUT_NAME)(x)
    return keras().Model(inputs, outputs, name="mlp")


def build_mlp_deep(dropout: float | None = None, shape=MNIST_SHAPE, classes: int = MNIST_CLASSES):
    """flatten -> dense 65 relu -> dense 65 relu -> dense K."""
    layers = keras().layers
    inputs = _inputs(shape)
    x = layers.Flatten(name="flatten")(inputs)
    x = layers.Dense(65, activation="relu", name="fc1")(x)
    x = layers.Dense(65, activation="relu", name="fc2")(x)
    outputs = layers.Dense(classes, name=OUTPUT_NAME)(x)
    return keras().Model(inputs, outputs, name="mlp_deep")


def build_softmax(dropout: float | None = None, shape=MNIST_SHAPE, classes: int = MNIST_CLASSES):
    """Softmax regression: flatten -> dense K (the logits; softmax is in the loss)."""
    layers = keras().layers
    inputs = _inputs(shape)
    outputs = layers.Dense(classes, name=OUTPUT_NAME)(layers.Flatten(name="flatten")(inputs))
    return keras().Model(inputs, outputs, name="softmax")


ARCHITECTURES = {
    a.name: a
    for a in (
        Architecture("cnn", build_cnn, "the seed CNN (conv 5x5x32, conv 5x5x64, dense 1024)", 3_274_634,
                     epochs=6, learning_rate=2e-3, batch_size=128, dropout=0.5, tutorial_accuracy=0.992,
                     lr_schedule="cosine", precision="auto"),  # chosen on the validation split: benchmarks/TRAINING.md
        # (bf16 there, on a CPU with AMX; "auto" keeps bf16 where the CPU computes it, float32 elsewhere)
        Architecture("mlp", build_mlp, "dense 128 relu, dropout 0.2", 101_770,
                     epochs=20, learning_rate=1e-3, batch_size=100, dropout=0.2, tutorial_accuracy=0.979),
        Architecture("mlp-deep", build_mlp_deep, "dense 65 relu, dense 65 relu", 55_975,
                     epochs=15, learning_rate=1e-3, batch_size=100, dropout=None, tutorial_accuracy=0.97),
        Architecture("softmax", build_softmax, "softmax regression", 7_850,
                     epochs=10, learning_rate=1e-3, batch_size=100, dropout=None, tutorial_accuracy=0.92),
    )
}


def build(arch: str, dropout: float | None = None, shape=MNIST_SHAPE, classes: int = MNIST_CLASSES):
    return ARCHITECTURES[arch].build(dropout, shape, classes)
