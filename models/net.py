"""The classifier network (Keras 3 / TensorFlow): a compact depthwise-separable CNN.

Normalisation is BatchNorm directly after every convolution, without bias, so that the TFLite converter folds
it into the convolution weights: the exported int8 graph has only CONV_2D, DEPTHWISE_CONV_2D, ADD, MEAN,
FULLY_CONNECTED and SOFTMAX (all with int8 kernels in TFLite/XNNPACK). Robustness to stain / device shift comes
from the training augmentation, not from the normalisation layer.
"""

from __future__ import annotations

import keras
from keras import layers

# (expansion-free depthwise-separable blocks) per stage: (out_channels, stride, repeats)
STAGES = {
    "s": [(24, 1, 1), (40, 2, 2), (80, 2, 2), (128, 2, 2), (192, 2, 1)],
    "m": [(32, 1, 1), (48, 2, 2), (96, 2, 3), (160, 2, 2), (256, 2, 1)],
}
STEM = {"s": 16, "m": 24}
HEAD = {"s": 256, "m": 320}


NORMS = ("bn", "gn")
GN_GROUPS = 8


def normalise(x, name, norm="bn"):
    if norm == "gn":
        return layers.GroupNormalization(GN_GROUPS, epsilon=1e-3, name=name)(x)
    return layers.BatchNormalization(momentum=0.97, epsilon=1e-3, name=name)(x)


def conv_norm(x, filters, kernel, stride, name, act=True, norm="bn"):
    x = layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = normalise(x, f"{name}_bn", norm)
    return layers.ReLU(6.0, name=f"{name}_relu")(x) if act else x


def ds_block(x, filters, stride, name, norm="bn"):
    inp = x
    y = layers.DepthwiseConv2D(3, strides=stride, padding="same", use_bias=False, name=f"{name}_dw")(x)
    y = normalise(y, f"{name}_dwbn", norm)
    y = layers.ReLU(6.0, name=f"{name}_dwrelu")(y)
    y = layers.Conv2D(filters, 1, use_bias=False, name=f"{name}_pw")(y)
    y = normalise(y, f"{name}_pwbn", norm)
    if stride == 1 and inp.shape[-1] == filters:
        y = layers.Add(name=f"{name}_add")([inp, y])
    return layers.ReLU(6.0, name=f"{name}_pwrelu")(y)


def build_model(size: int, n_classes: int, width: str = "s", dropout: float = 0.2, norm: str = "bn") -> keras.Model:
    """Input: RGB float 0..255 of shape (size, size, 3). Output: softmax probabilities."""
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
    inp = keras.Input((size, size, 3), name="rgb")
    x = layers.Rescaling(1.0 / 127.5, offset=-1.0, name="scale")(inp)
    x = conv_norm(x, STEM[width], 3, 2, "stem", norm=norm)
    for si, (f, s, r) in enumerate(STAGES[width]):
        for ri in range(r):
            x = ds_block(x, f, s if ri == 0 else 1, f"b{si}_{ri}", norm=norm)
    x = conv_norm(x, HEAD[width], 1, 1, "head", norm=norm)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    x = layers.Dropout(dropout, name="drop")(x)
    out = layers.Dense(n_classes, activation="softmax", name="probs")(x)
    return keras.Model(inp, out, name=f"wbc_dsnet_{width}_{size}" + ("_gn" if norm == "gn" else ""))
