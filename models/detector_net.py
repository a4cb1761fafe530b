"""The WBC detector network (Keras 3): a small fully-convolutional CenterNet.

Backbone of depthwise-separable blocks down to stride 16, a light feature pyramid back up to stride 4, and
two heads at stride 4: a centre heatmap (sigmoid) and a box regression (centre offset x/y and width/height,
all in output cells). BatchNorm without bias after every convolution (folded by the TFLite converter), ReLU6;
upsampling is nearest-neighbour. Fully convolutional: trained on small crops, exported at the runtime size.
"""

from __future__ import annotations

import keras
from keras import layers

from models.net import conv_norm, ds_block

HEAT_BIAS = -2.19  # sigmoid(-2.19) = 0.1: CenterNet's prior for the heatmap


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
    x = conv_norm(x, c1, 3, 2, "stem")                       # /2
    x = ds_block(x, c2, 2, "s4a")                                # /4
    f4 = ds_block(x, c2, 1, "s4b")
    x = ds_block(f4, c3, 2, "s8a")                               # /8
    f8 = ds_block(x, c3, 1, "s8b")
    x = ds_block(f8, c4, 2, "s16a")                              # /16
    x = ds_block(x, c4, 1, "s16b")
    f16 = ds_block(x, c4, 1, "s16c")
    # pyramid back to /4
    u = conv_norm(f16, c3, 1, 1, "lat16")
    u = _up2(u, "up8", fixed)
    u = layers.Add(name="fuse8")([u, conv_norm(f8, c3, 1, 1, "lat8", act=False)])
    u = ds_block(u, c3, 1, "p8")
    u = conv_norm(u, 2 * base, 1, 1, "red8")
    u = _up2(u, "up4", fixed)
    u = layers.Add(name="fuse4")([u, conv_norm(f4, 2 * base, 1, 1, "lat4", act=False)])
    u = ds_block(u, 2 * base, 1, "p4")
    h = ds_block(u, 2 * base, 1, "heat_ds")
    heat = layers.Conv2D(1, 1, activation="sigmoid", name="heat",
                         bias_initializer=keras.initializers.Constant(HEAT_BIAS))(h)
    b = ds_block(u, 2 * base, 1, "box_ds")
    box = layers.Conv2D(4, 1, name="box")(b)
    return keras.Model(inp, {"heat": heat, "box": box}, name=f"wbc_centernet_{base}")
