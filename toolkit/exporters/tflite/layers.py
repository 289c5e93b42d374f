"""Keras layers the TFLite exporter rewrites a model with before its int8 conversion (imported only then:
the format module stays importable without Keras, for --help and the registry scan)."""

from __future__ import annotations

import keras
import numpy as np


class DepthwiseAffine(keras.layers.Layer):
    """y = x * scale + shift per last-axis channel, as a depthwise 1x1 convolution."""

    def __init__(self, scale, shift, **kwargs):
        super().__init__(**kwargs)
        self.kernel = np.asarray(scale).reshape(1, 1, -1, 1)
        self.shift = np.asarray(shift)

    def call(self, x):
        shape = keras.ops.shape(x)
        channels = self.kernel.shape[2]
        grid = keras.ops.reshape(x, (-1, 1, 1, channels)) if len(x.shape) == 2 else x
        y = keras.ops.depthwise_conv(grid, self.kernel, strides=1, padding="valid") + self.shift
        return keras.ops.reshape(y, shape) if len(x.shape) == 2 else y
