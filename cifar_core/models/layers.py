"""Custom Keras layers of the lab's networks, registered so saved models load with safe_mode.

Only what Keras lacks: a BatchNorm on TensorFlow's fused kernel with an optional frozen scale
and a faster-learning shift, and airbench's patch-whitening first convolution.
"""
from __future__ import annotations

import keras
import numpy as np

PACKAGE = "cifar_core"


@keras.saving.register_keras_serializable(package=PACKAGE)
class FusedBatchNorm(keras.layers.Layer):
    """Batch normalisation over the channels of NHWC images, on TensorFlow's fused kernel.

    keras.layers.BatchNormalization computes moments and the normalisation as separate ops;
    the fused kernel does both at once: 1.6x faster forward+backward on the full-width airbench
    net's tensors on this lab's 2-core CPU, level on the quarter-width ones (bench/recipe_profile.py). `scale=False` freezes the scale at 1 (airbench). The shift is
    stored divided by `bias_scale`, so plain SGD moves it `bias_scale**2` times faster than the
    other weights (airbench trains BatchNorm biases at 64x the learning rate) while decoupled
    weight decay shrinks it by the same fraction as everything else.
    """

    def __init__(self, momentum: float = 0.9, epsilon: float = 1e-5, scale: bool = True,
                 bias_scale: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.momentum = float(momentum)  # Keras' meaning: weight of the old moving statistic
        self.epsilon = max(float(epsilon), 1.001e-5)  # the fused kernel's minimum
        self.scale = bool(scale)
        self.bias_scale = float(bias_scale)

    def build(self, input_shape):
        channels = int(input_shape[-1])
        # float32 even under a mixed policy (autocast off): the fused kernel takes bfloat16 or
        # float16 images but float32 scale, shift and statistics
        self.shift = self.add_weight(shape=(channels,), initializer="zeros", name="shift", autocast=False)
        self.gamma = (self.add_weight(shape=(channels,), initializer="ones", name="gamma", autocast=False)
                      if self.scale else None)
        self.moving_mean = self.add_weight(shape=(channels,), initializer="zeros", trainable=False,
                                           name="moving_mean", autocast=False)
        self.moving_variance = self.add_weight(shape=(channels,), initializer="ones", trainable=False,
                                               name="moving_variance", autocast=False)

    def call(self, inputs, training=False):
        import tensorflow as tf

        offset = self.shift * self.bias_scale
        gamma = self.gamma if self.gamma is not None else tf.ones_like(offset)
        if training:
            out, mean, variance = tf.compat.v1.nn.fused_batch_norm(
                inputs, gamma, offset, epsilon=self.epsilon, is_training=True)
            m = self.momentum
            self.moving_mean.assign(m * self.moving_mean + (1.0 - m) * mean)
            self.moving_variance.assign(m * self.moving_variance + (1.0 - m) * variance)
            return out
        out, _, _ = tf.compat.v1.nn.fused_batch_norm(
            inputs, gamma, offset, mean=self.moving_mean, variance=self.moving_variance,
            epsilon=self.epsilon, is_training=False)
        return out

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "momentum": self.momentum, "epsilon": self.epsilon,
                "scale": self.scale, "bias_scale": self.bias_scale}


@keras.saving.register_keras_serializable(package=PACKAGE)
class PatchWhitening(keras.layers.Layer):
    """A fixed 'valid' convolution that whitens small patches (airbench's first layer).

    The kernel is set once from training images (`whitening_kernel`) and never trained; the
    bias is trained. Output channels: twice the patch size (each eigenvector and its negative).
    """

    def __init__(self, patch_size: int = 2, **kwargs):
        super().__init__(**kwargs)
        self.patch_size = int(patch_size)

    def build(self, input_shape):
        channels = int(input_shape[-1])
        width = 2 * channels * self.patch_size ** 2
        self.kernel = self.add_weight(shape=(self.patch_size, self.patch_size, channels, width),
                                      initializer="glorot_uniform", trainable=False, name="kernel")
        self.bias = self.add_weight(shape=(width,), initializer="zeros", name="bias")

    def call(self, inputs):
        import tensorflow as tf

        return tf.nn.conv2d(inputs, self.kernel, strides=1, padding="VALID") + self.bias

    def compute_output_shape(self, input_shape):
        n, h, w, c = input_shape
        k = self.patch_size
        return (n, None if h is None else h - k + 1, None if w is None else w - k + 1, 2 * c * k * k)

    def get_config(self):
        return {**super().get_config(), "patch_size": self.patch_size}


def whitening_kernel(images: np.ndarray, patch_size: int = 2, eps: float = 5e-4) -> np.ndarray:
    """(k, k, C, 2*C*k*k) kernel whose outputs are the patches' coordinates in the eigenbasis
    of their covariance, each divided by its standard deviation (and negated copies).

    Args:
      images: (N, H, W, C) float images, already normalised the way the network sees them.
    """
    x = np.asarray(images, dtype=np.float64)
    k = patch_size
    patches = np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(1, 2))  # N,H',W',C,k,k
    patches = patches.transpose(0, 1, 2, 4, 5, 3).reshape(-1, k * k * x.shape[-1])  # (h, w, c) order
    covariance = patches.T @ patches / len(patches)
    eigenvalues, eigenvectors = np.linalg.eigh(covariance)  # ascending
    order = np.argsort(eigenvalues)[::-1]
    scaled = eigenvectors[:, order] / np.sqrt(eigenvalues[order] + eps)
    kernel = np.concatenate([scaled, -scaled], axis=1)
    return kernel.reshape(k, k, x.shape[-1], -1).astype(np.float32)
