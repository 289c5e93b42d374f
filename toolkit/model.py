"""The seed CNN, nothing else."""

from __future__ import annotations

from toolkit._quiet import keras

INPUT_NAME = "image"
OUTPUT_NAME = "logits"


def build_cnn(dropout: float = 0.5):
    """conv 5x5x32 -> maxpool -> conv 5x5x64 -> maxpool -> dense 1024 -> dropout -> dense 10.

    Outputs logits (no softmax), 3,274,634 parameters.
    """
    k = keras()
    layers = k.layers
    inputs = k.Input(shape=(28, 28, 1), name=INPUT_NAME)
    x = layers.Conv2D(32, 5, padding="same", activation="relu", name="conv1")(inputs)
    x = layers.MaxPooling2D(2, name="pool1")(x)
    x = layers.Conv2D(64, 5, padding="same", activation="relu", name="conv2")(x)
    x = layers.MaxPooling2D(2, name="pool2")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(1024, activation="relu", name="fc1")(x)
    x = layers.Dropout(dropout, name="dropout")(x)
    outputs = layers.Dense(10, name=OUTPUT_NAME)(x)
    return k.Model(inputs, outputs, name="seed_cnn")
