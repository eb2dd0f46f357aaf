"""InceptionV3 as pytorch-fid computes FID: `pt_inception-2015-12-05`, the TensorFlow FID network.

pytorch-fid (mseitzer/pytorch-fid, `inception.py`) builds torchvision's Inception3 with
`aux_logits=False` and patches the blocks where TensorFlow's 2015-12-05 graph differs: the
InceptionA / C / E average pools exclude the padding (`count_include_pad=False`) and the last
InceptionE block max-pools instead. The FID features are the 2048-d output of the final average
pool. Input preprocessing follows `InceptionV3.forward`: RGB in [0, 1], resized to 299 x 299 by
bilinear interpolation (half-pixel centres, no anti-aliasing, as `F.interpolate(...,
align_corners=False)`), then scaled to [-1, 1].

Submodules carry torchvision's names (`Conv2d_1a_3x3.conv`, `Mixed_6b.branch7x7dbl_3.bn`, ...) so
the released `pt_inception-2015-12-05-6726825d.pth` state dict maps one to one
(`vasa_jax.models.pretrained.load_inception`; its `fc.*` classifier is not needed). Convolutions
have no bias; each is followed by a BatchNorm (eps 1e-3, running statistics) and a ReLU.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = Any

INPUT_SIZE = 299
FEATURES = 2048
BATCH_NORM_EPSILON = 1e-3


class BasicConv2d(nn.Module):
  """torchvision's BasicConv2d: conv (no bias) -> BatchNorm -> ReLU."""
  features: int
  kernel: Sequence[int]
  strides: Sequence[int] = (1, 1)
  padding: Sequence[int] = (0, 0)
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, inputs: jax.Array) -> jax.Array:  # [B, H, W, Cin] -> [B, H', W', features]
    hidden = nn.Conv(self.features, tuple(self.kernel), strides=tuple(self.strides),
                     padding=[(p, p) for p in self.padding], use_bias=False, dtype=self.dtype,
                     param_dtype=self.param_dtype, name="conv")(inputs)
    hidden = nn.BatchNorm(use_running_average=True, epsilon=BATCH_NORM_EPSILON,
                          dtype=jnp.float32, param_dtype=self.param_dtype, name="bn")(hidden)
    return nn.relu(hidden).astype(self.dtype)


def _average_pool_3x3(inputs: jax.Array) -> jax.Array:
  """TensorFlow's 3x3 stride-1 SAME average pool: the padding is not counted."""
  return nn.avg_pool(inputs, (3, 3), (1, 1), ((1, 1), (1, 1)), count_include_pad=False)


def _max_pool_3x3_stride_2(inputs: jax.Array) -> jax.Array:
  return nn.max_pool(inputs, (3, 3), (2, 2))


class _Block(nn.Module):
  """Base of the Inception blocks: `conv(name, features, kernel, ...)` makes a named BasicConv2d."""
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  def conv(self, name: str, features: int, kernel: Sequence[int] = (1, 1),
           strides: Sequence[int] = (1, 1), padding: Sequence[int] = (0, 0)) -> BasicConv2d:
    return BasicConv2d(features, kernel, strides, padding, dtype=self.dtype,
                       param_dtype=self.param_dtype, name=name)


class InceptionA(_Block):
  """Mixed_5b/c/d (FIDInceptionA): 1x1 | 5x5 | double 3x3 | avg pool + 1x1."""
  pool_features: int = 32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    branch1x1 = self.conv("branch1x1", 64)(x)
    branch5x5 = self.conv("branch5x5_2", 64, (5, 5), padding=(2, 2))(
        self.conv("branch5x5_1", 48)(x))
    branch3x3dbl = self.conv("branch3x3dbl_1", 64)(x)
    branch3x3dbl = self.conv("branch3x3dbl_2", 96, (3, 3), padding=(1, 1))(branch3x3dbl)
    branch3x3dbl = self.conv("branch3x3dbl_3", 96, (3, 3), padding=(1, 1))(branch3x3dbl)
    branch_pool = self.conv("branch_pool", self.pool_features)(_average_pool_3x3(x))
    return jnp.concatenate([branch1x1, branch5x5, branch3x3dbl, branch_pool], axis=-1)


class InceptionB(_Block):
  """Mixed_6a: strided 3x3 | double 3x3 (strided) | max pool."""

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    branch3x3 = self.conv("branch3x3", 384, (3, 3), strides=(2, 2))(x)
    branch3x3dbl = self.conv("branch3x3dbl_1", 64)(x)
    branch3x3dbl = self.conv("branch3x3dbl_2", 96, (3, 3), padding=(1, 1))(branch3x3dbl)
    branch3x3dbl = self.conv("branch3x3dbl_3", 96, (3, 3), strides=(2, 2))(branch3x3dbl)
    return jnp.concatenate([branch3x3, branch3x3dbl, _max_pool_3x3_stride_2(x)], axis=-1)


class InceptionC(_Block):
  """Mixed_6b..e (FIDInceptionC): 1x1 | 1x7-7x1 | double 7x1-1x7 | avg pool + 1x1."""
  channels_7x7: int = 128

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    c7 = self.channels_7x7
    branch1x1 = self.conv("branch1x1", 192)(x)
    branch7x7 = self.conv("branch7x7_1", c7)(x)
    branch7x7 = self.conv("branch7x7_2", c7, (1, 7), padding=(0, 3))(branch7x7)
    branch7x7 = self.conv("branch7x7_3", 192, (7, 1), padding=(3, 0))(branch7x7)
    branch7x7dbl = self.conv("branch7x7dbl_1", c7)(x)
    branch7x7dbl = self.conv("branch7x7dbl_2", c7, (7, 1), padding=(3, 0))(branch7x7dbl)
    branch7x7dbl = self.conv("branch7x7dbl_3", c7, (1, 7), padding=(0, 3))(branch7x7dbl)
    branch7x7dbl = self.conv("branch7x7dbl_4", c7, (7, 1), padding=(3, 0))(branch7x7dbl)
    branch7x7dbl = self.conv("branch7x7dbl_5", 192, (1, 7), padding=(0, 3))(branch7x7dbl)
    branch_pool = self.conv("branch_pool", 192)(_average_pool_3x3(x))
    return jnp.concatenate([branch1x1, branch7x7, branch7x7dbl, branch_pool], axis=-1)


class InceptionD(_Block):
  """Mixed_7a: 1x1 + strided 3x3 | 1x1, 1x7, 7x1, strided 3x3 | max pool."""

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    branch3x3 = self.conv("branch3x3_2", 320, (3, 3), strides=(2, 2))(
        self.conv("branch3x3_1", 192)(x))
    branch7x7x3 = self.conv("branch7x7x3_1", 192)(x)
    branch7x7x3 = self.conv("branch7x7x3_2", 192, (1, 7), padding=(0, 3))(branch7x7x3)
    branch7x7x3 = self.conv("branch7x7x3_3", 192, (7, 1), padding=(3, 0))(branch7x7x3)
    branch7x7x3 = self.conv("branch7x7x3_4", 192, (3, 3), strides=(2, 2))(branch7x7x3)
    return jnp.concatenate([branch3x3, branch7x7x3, _max_pool_3x3_stride_2(x)], axis=-1)


class InceptionE(_Block):
  """Mixed_7b (FIDInceptionE_1, avg pool) and Mixed_7c (FIDInceptionE_2, max pool)."""
  max_pool: bool = False

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    branch1x1 = self.conv("branch1x1", 320)(x)
    branch3x3 = self.conv("branch3x3_1", 384)(x)
    branch3x3 = jnp.concatenate([
        self.conv("branch3x3_2a", 384, (1, 3), padding=(0, 1))(branch3x3),
        self.conv("branch3x3_2b", 384, (3, 1), padding=(1, 0))(branch3x3)], axis=-1)
    branch3x3dbl = self.conv("branch3x3dbl_1", 448)(x)
    branch3x3dbl = self.conv("branch3x3dbl_2", 384, (3, 3), padding=(1, 1))(branch3x3dbl)
    branch3x3dbl = jnp.concatenate([
        self.conv("branch3x3dbl_3a", 384, (1, 3), padding=(0, 1))(branch3x3dbl),
        self.conv("branch3x3dbl_3b", 384, (3, 1), padding=(1, 0))(branch3x3dbl)], axis=-1)
    if self.max_pool:  # pytorch-fid: the TF graph max-pools here
      pooled = nn.max_pool(x, (3, 3), (1, 1), ((1, 1), (1, 1)))
    else:
      pooled = _average_pool_3x3(x)
    branch_pool = self.conv("branch_pool", 192)(pooled)
    return jnp.concatenate([branch1x1, branch3x3, branch3x3dbl, branch_pool], axis=-1)


class FIDInceptionV3(nn.Module):
  """Images [B, H, W, 3] RGB in [0, 1] -> float32 [B, 2048] pool3 features (FID's)."""
  dtype: Dtype = jnp.float32  # compute dtype
  param_dtype: Dtype = jnp.float32

  # torchvision names such as `branch7x7_1` are kept as they are (no `_N` -> `.N`).
  KEEPS_TORCH_NAMES = True

  @nn.compact
  def __call__(self, images: jax.Array) -> jax.Array:
    kwargs = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    x = images.astype(jnp.float32)
    if x.shape[1:3] != (INPUT_SIZE, INPUT_SIZE):
      x = jax.image.resize(x, (x.shape[0], INPUT_SIZE, INPUT_SIZE, x.shape[-1]), "linear",
                           antialias=False)
    x = (2.0 * x - 1.0).astype(self.dtype)
    x = BasicConv2d(32, (3, 3), (2, 2), name="Conv2d_1a_3x3", **kwargs)(x)  # [B, 149, 149, 32]
    x = BasicConv2d(32, (3, 3), name="Conv2d_2a_3x3", **kwargs)(x)  # [B, 147, 147, 32]
    x = BasicConv2d(64, (3, 3), padding=(1, 1), name="Conv2d_2b_3x3", **kwargs)(x)
    x = _max_pool_3x3_stride_2(x)  # [B, 73, 73, 64]
    x = BasicConv2d(80, (1, 1), name="Conv2d_3b_1x1", **kwargs)(x)
    x = BasicConv2d(192, (3, 3), name="Conv2d_4a_3x3", **kwargs)(x)  # [B, 71, 71, 192]
    x = _max_pool_3x3_stride_2(x)  # [B, 35, 35, 192]
    x = InceptionA(pool_features=32, name="Mixed_5b", **kwargs)(x)  # [B, 35, 35, 256]
    x = InceptionA(pool_features=64, name="Mixed_5c", **kwargs)(x)  # [B, 35, 35, 288]
    x = InceptionA(pool_features=64, name="Mixed_5d", **kwargs)(x)
    x = InceptionB(name="Mixed_6a", **kwargs)(x)  # [B, 17, 17, 768]
    for name, channels in (("Mixed_6b", 128), ("Mixed_6c", 160), ("Mixed_6d", 160),
                           ("Mixed_6e", 192)):
      x = InceptionC(channels_7x7=channels, name=name, **kwargs)(x)
    x = InceptionD(name="Mixed_7a", **kwargs)(x)  # [B, 8, 8, 1280]
    x = InceptionE(name="Mixed_7b", **kwargs)(x)  # [B, 8, 8, 2048]
    x = InceptionE(max_pool=True, name="Mixed_7c", **kwargs)(x)
    return jnp.mean(x.astype(jnp.float32), axis=(1, 2))  # [B, 2048]

  def example_inputs(self) -> tuple[jax.ShapeDtypeStruct]:
    return (jax.ShapeDtypeStruct((1, INPUT_SIZE, INPUT_SIZE, 3), jnp.float32),)
