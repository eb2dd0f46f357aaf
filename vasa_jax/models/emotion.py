"""HSEmotion's facial-expression classifier (the emotion model VASA-1 conditions on).

VASA-1 conditions its motion generator on the emotion offset of a face crop given by an
off-the-shelf classifier; HSEmotion (Savchenko, HSE-asavchenko/face-emotion-recognition) releases
EfficientNet-B0 models trained on AffectNet's eight expressions: `enet_b0_8_best_afew.pt`,
`enet_b0_8_best_vgaf.pt` and `enet_b0_8_va_mtl.pt` (8 expressions plus valence and arousal). They
are timm `tf_efficientnet_b0_ns` networks (TensorFlow's SAME padding, BatchNorm eps 1e-3) whose
classifier was replaced by `nn.Sequential(nn.Linear(1280, num_outputs))`.

`EmotionNet` has the layout and submodule names of timm's EfficientNet, with `blocks.2.1` written as
a stage module `blocks_2` holding block `1`, so a converted state dict maps one to one
(`vasa_jax.models.pretrained.load_emotion`; `python -m data_prep.convert_weights --kind=emotion`).
Every BatchNorm runs in inference mode on its running statistics (collection `batch_stats`).

Input: face crops [B, H, W, 3] RGB in [0, 1] (`preprocess` resizes them to 224 x 224 and applies
ImageNet's mean and std, as HSEmotion's `transforms.Resize((224, 224))`, `ToTensor`, `Normalize`).
Output: the logits of `EMOTION_CLASSES` (`scores` turns them into the softmax the data stores).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from vasa_jax.data import records

Dtype = Any

# HSEmotion's class order of its 8-class models (`HSEmotionRecognizer.idx_to_class`).
EMOTION_CLASSES = records.EMOTION_CLASSES
NUM_EMOTIONS = len(EMOTION_CLASSES)
# Side of the square input of the B0 models.
INPUT_SIZE = 224
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
BATCH_NORM_EPSILON = 1e-3  # TensorFlow's default, kept by timm's tf_* models
STEM_FEATURES = 32
HEAD_FEATURES = 1280
SQUEEZE_RATIO = 0.25  # squeeze-excite width: a quarter of the block's input channels
# EfficientNet-B0's stages: (blocks, kernel, stride of the first block, expansion, channels).
# Stage 0 is a depthwise-separable conv; the others are inverted residuals (MBConv).
STAGES = (
    (1, 3, 1, 1, 16),
    (2, 3, 2, 6, 24),
    (2, 5, 2, 6, 40),
    (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112),
    (4, 5, 2, 6, 192),
    (1, 3, 1, 6, 320),
)


def _conv(features: int, kernel_size: int, dtype: Dtype, param_dtype: Dtype, name: str,
          stride: int = 1, groups: int = 1, use_bias: bool = False) -> nn.Conv:
  """A conv with TensorFlow's SAME padding (timm's Conv2dSame on strided convs; on stride 1
  it equals torch's symmetric kernel_size // 2)."""
  return nn.Conv(
      features, (kernel_size, kernel_size), strides=(stride, stride), padding="SAME",
      feature_group_count=groups, use_bias=use_bias, dtype=dtype, param_dtype=param_dtype,
      kernel_init=nn.with_logical_partitioning(nn.initializers.lecun_normal(),
                                               (None, None, None, "channels")),
      name=name)


def _batch_norm(name: str, param_dtype: Dtype) -> nn.BatchNorm:
  """Inference-mode BatchNorm, computed in float32."""
  return nn.BatchNorm(use_running_average=True, epsilon=BATCH_NORM_EPSILON, dtype=jnp.float32,
                      param_dtype=param_dtype, name=name)


class SqueezeExcite(nn.Module):
  """x * sigmoid(conv_expand(silu(conv_reduce(mean over H, W of x))))."""
  reduced: int  # channels of the squeeze
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, features: jax.Array) -> jax.Array:  # [B, H, W, C] -> [B, H, W, C]
    channels = features.shape[-1]
    pooled = jnp.mean(features.astype(jnp.float32), axis=(1, 2), keepdims=True)  # [B, 1, 1, C]
    gate = _conv(self.reduced, 1, self.dtype, self.param_dtype, "conv_reduce",
                 use_bias=True)(pooled.astype(self.dtype))  # [B, 1, 1, R]
    gate = nn.silu(gate)
    gate = _conv(channels, 1, self.dtype, self.param_dtype, "conv_expand",
                 use_bias=True)(gate)  # [B, 1, 1, C]
    return features * nn.sigmoid(gate.astype(jnp.float32)).astype(features.dtype)


class MBConv(nn.Module):
  """timm's InvertedResidual (expansion > 1) or DepthwiseSeparableConv (expansion 1).

  Inverted residual: conv_pw 1x1 (expand), bn1, SiLU, conv_dw kxk (strided), bn2, SiLU, se,
  conv_pwl 1x1 (project), bn3. Depthwise separable: conv_dw, bn1, SiLU, se, conv_pw, bn2. Both add
  the input when the stride is 1 and the channels match.
  """
  features: int  # output channels
  kernel_size: int
  stride: int
  expansion: int
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, inputs: jax.Array) -> jax.Array:
    # inputs [B, H, W, Cin] -> [B, H / stride, W / stride, features]
    dtype, param_dtype = self.dtype, self.param_dtype
    in_features = inputs.shape[-1]
    mid = in_features * self.expansion
    squeeze = SqueezeExcite(max(1, int(in_features * SQUEEZE_RATIO)), dtype, param_dtype,
                            name="se")
    separable = self.expansion == 1
    hidden = inputs
    if not separable:
      hidden = _conv(mid, 1, dtype, param_dtype, "conv_pw")(hidden)  # [B, H, W, mid]
      hidden = nn.silu(_batch_norm("bn1", param_dtype)(hidden)).astype(dtype)
    hidden = _conv(mid, self.kernel_size, dtype, param_dtype, "conv_dw", stride=self.stride,
                   groups=mid)(hidden)  # [B, H / s, W / s, mid]
    hidden = _batch_norm("bn1" if separable else "bn2", param_dtype)(hidden)
    hidden = squeeze(nn.silu(hidden).astype(dtype))
    hidden = _conv(self.features, 1, dtype, param_dtype,
                   "conv_pw" if separable else "conv_pwl")(hidden)  # [B, H / s, W / s, Cout]
    hidden = _batch_norm("bn2" if separable else "bn3", param_dtype)(hidden).astype(dtype)
    if self.stride == 1 and in_features == self.features:
      hidden = hidden + inputs
    return hidden


class Stage(nn.Module):
  """One of timm's `blocks.N` (an nn.Sequential): its blocks are named "0", "1", ..."""
  num_blocks: int
  kernel_size: int
  stride: int
  expansion: int
  features: int
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, features: jax.Array) -> jax.Array:
    for block in range(self.num_blocks):
      features = MBConv(self.features, self.kernel_size, self.stride if block == 0 else 1,
                        self.expansion, self.dtype, self.param_dtype, name=str(block))(features)
    return features


def preprocess(images: jax.Array) -> jax.Array:
  """Face crops [B, H, W, 3] RGB in [0, 1] -> the network's input [B, 224, 224, 3] (float32).

  HSEmotion resizes with PIL's bilinear filter, which widens its kernel when shrinking; JAX's
  antialiased "linear" resize does the same.
  """
  images = jnp.asarray(images, jnp.float32)
  batch, height, width, channels = images.shape
  if (height, width) != (INPUT_SIZE, INPUT_SIZE):
    images = jax.image.resize(images, (batch, INPUT_SIZE, INPUT_SIZE, channels), "linear",
                              antialias=True)
  return (images - jnp.asarray(IMAGENET_MEAN)) / jnp.asarray(IMAGENET_STD)


class EmotionNet(nn.Module):
  """EfficientNet-B0 expression classifier: normalised images [B, 224, 224, 3] -> logits
  [B, num_outputs] (`preprocess` makes the input from face crops).

  num_outputs: 8 for HSEmotion's `enet_b0_8_*` (the converter keeps the 8 expression rows of
  `enet_b0_8_va_mtl`'s 10: its last two are valence and arousal).
  """
  num_outputs: int = NUM_EMOTIONS
  dtype: Dtype = jnp.float32  # compute dtype
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, images: jax.Array) -> jax.Array:
    dtype, param_dtype = self.dtype, self.param_dtype
    features = _conv(STEM_FEATURES, 3, dtype, param_dtype, "conv_stem", stride=2)(
        images.astype(dtype))  # [B, 112, 112, 32]
    features = nn.silu(_batch_norm("bn1", param_dtype)(features)).astype(dtype)
    for index, (num_blocks, kernel, stride, expansion, channels) in enumerate(STAGES):
      features = Stage(num_blocks, kernel, stride, expansion, channels, dtype, param_dtype,
                       name=f"blocks_{index}")(features)  # ends [B, 7, 7, 320]
    features = _conv(HEAD_FEATURES, 1, dtype, param_dtype, "conv_head")(features)
    features = nn.silu(_batch_norm("bn2", param_dtype)(features))  # [B, 7, 7, 1280] f32
    pooled = jnp.mean(features, axis=(1, 2))  # [B, 1280]
    logits = nn.Dense(
        self.num_outputs, dtype=dtype, param_dtype=param_dtype,
        kernel_init=nn.with_logical_partitioning(nn.initializers.lecun_normal(),
                                                 (None, "channels")),
        name="classifier_0")(pooled.astype(dtype))
    return logits.astype(jnp.float32)  # [B, num_outputs]

  def example_inputs(self) -> tuple[jax.ShapeDtypeStruct]:
    """One input image (for `pretrained.abstract_variables`)."""
    return (jax.ShapeDtypeStruct((1, INPUT_SIZE, INPUT_SIZE, 3), jnp.float32),)


def scores(model: EmotionNet, variables: Any, face_crops: jax.Array) -> jax.Array:
  """Face crops [B, H, W, 3] RGB in [0, 1] -> softmax over `EMOTION_CLASSES` [B, 8] (float32)."""
  logits = model.apply(variables, preprocess(face_crops))
  return jax.nn.softmax(logits[:, :NUM_EMOTIONS].astype(jnp.float32), axis=-1)
