"""The WBC detector network (Keras 3): a small fully-convolutional CenterNet.

Backbone of depthwise-separable blocks down to stride 16, a light feature pyramid back up to stride 4, and
two heads at stride 4: a centre heatmap (sigmoid) and a box regression (centre offset x/y and width/height,
all in output cells). BatchNorm without bias after every convolution (folded by the TFLite converter), ReLU6;
upsampling is nearest-neighbour. Fully convolutional: trained on small crops, exported at the runtime size.
"""

from __future__ import annotations

import keras
from keras import layers

HEAT_BIAS = -2.19  # sigmoid(-2.19) = 0.1: CenterNet's prior for the heatmap


def _conv_bn(x, filters, kernel, stride, name, act=True):
    x = layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = layers.BatchNormalization(momentum=0.97, epsilon=1e-3, name=f"{name}_bn")(x)
    return layers.ReLU(6.0, name=f"{name}_relu")(x) if act else x


def _ds(x, filters, stride, name):
    inp = x
    y = layers.DepthwiseConv2D(3, strides=stride, padding="same", use_bias=False, name=f"{name}_dw")(x)
    y = layers.BatchNormalization(momentum=0.97, epsilon=1e-3, name=f"{name}_dwbn")(y)
    y = layers.ReLU(6.0, name=f"{name}_dwrelu")(y)
    y = layers.Conv2D(filters, 1, use_bias=False, name=f"{name}_pw")(y)
    y = layers.BatchNormalization(momentum=0.97, epsilon=1e-3, name=f"{name}_pwbn")(y)
    if stride == 1 and inp.shape[-1] == filters:
        y = layers.Add(name=f"{name}_add")([inp, y])
    return layers.ReLU(6.0, name=f"{name}_pwrelu")(y)


def _up2(x, name, fixed: bool):
    """2x nearest-neighbour upsampling. With a fixed input size it is an image resize (one
    RESIZE_NEAREST_NEIGHBOR op in TFLite, which XNNPACK runs in int8) instead of UpSampling2D (RESHAPE + TILE);
    both give the same values (each pixel repeated 2x2) and have no weights."""
    if fixed:
        size = (2 * x.shape[1], 2 * x.shape[2])
        return layers.Lambda(lambda t: keras.ops.image.resize(t, size, interpolation="nearest"), name=name)(x)
    return layers.UpSampling2D(2, interpolation="nearest", name=name)(x)


def build_detector(height=None, width=None, base: int = 16) -> keras.Model:
    """Input: RGB float 0..255 (height, width, 3); height and width multiples of 16 (None: any size, for
    training). Outputs: ``heat`` (H/4, W/4, 1) in 0..1 and ``box`` (H/4, W/4, 4)."""
    fixed = height is not None and width is not None
    c1, c2, c3, c4 = base, int(1.5 * base), 3 * base, 5 * base
    inp = keras.Input((height, width, 3), name="rgb")
    x = layers.Rescaling(1.0 / 127.5, offset=-1.0, name="scale")(inp)
    x = _conv_bn(x, c1, 3, 2, "stem")                       # /2
    x = _ds(x, c2, 2, "s4a")                                # /4
    f4 = _ds(x, c2, 1, "s4b")
    x = _ds(f4, c3, 2, "s8a")                               # /8
    f8 = _ds(x, c3, 1, "s8b")
    x = _ds(f8, c4, 2, "s16a")                              # /16
    x = _ds(x, c4, 1, "s16b")
    f16 = _ds(x, c4, 1, "s16c")
    # pyramid back to /4
    u = _conv_bn(f16, c3, 1, 1, "lat16")
    u = _up2(u, "up8", fixed)
    u = layers.Add(name="fuse8")([u, _conv_bn(f8, c3, 1, 1, "lat8", act=False)])
    u = _ds(u, c3, 1, "p8")
    u = _conv_bn(u, 2 * base, 1, 1, "red8")
    u = _up2(u, "up4", fixed)
    u = layers.Add(name="fuse4")([u, _conv_bn(f4, 2 * base, 1, 1, "lat4", act=False)])
    u = _ds(u, 2 * base, 1, "p4")
    h = _ds(u, 2 * base, 1, "heat_ds")
    heat = layers.Conv2D(1, 1, activation="sigmoid", name="heat",
                         bias_initializer=keras.initializers.Constant(HEAT_BIAS))(h)
    b = _ds(u, 2 * base, 1, "box_ds")
    box = layers.Conv2D(4, 1, name="box")(b)
    return keras.Model(inp, {"heat": heat, "box": box}, name=f"wbc_centernet_{base}")
