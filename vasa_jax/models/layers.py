"""Building blocks shared by the face autoencoder's networks.

Every parameter carries logical axis names (`nn.with_logical_partitioning`) that
`config.sharding_rules` maps onto the device mesh: conv kernels `[k.., cin, cout]` name their output
axis "channels", dense kernels `[in, out]` are named ("embed", "mlp") unless told otherwise.
Computation runs in `dtype` (bfloat16 on accelerators), parameters are stored in `param_dtype`
(float32) and group normalisation is always computed in float32.

Activations are pinned to the batch sharding at every conv and dense output (`batch_sharded`,
active while the training loop traces its step under `sharding.activation_rules`): with the parameters
FSDP-sharded over their output channels, XLA would otherwise shard activations by channel and
gather the global batch across devices; pinned, it gathers the (parameter-sized) weights instead.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from vasa_jax.training import sharding

Dtype = Any

# Slope of the leaky ReLU used after every normalisation.
NEGATIVE_SLOPE = 0.2


def activation(features: jax.Array) -> jax.Array:
  """The nonlinearity of every block (leaky ReLU keeps gradients alive in GAN training)."""
  return nn.leaky_relu(features, NEGATIVE_SLOPE)


def compute_dtype(name: str) -> jnp.dtype:
  """A config's `model.dtype`: "float32", "bfloat16", or "auto" = bfloat16 on GPUs and TPUs
  (their matrix units run it at full rate) and float32 on CPUs."""
  if name == "auto":
    return jnp.dtype(jnp.bfloat16 if jax.default_backend() in ("gpu", "tpu") else jnp.float32)
  return jnp.dtype(name)


def batch_sharded(features: jax.Array) -> jax.Array:
  """`features` [B, ...] constrained to be split over the mesh's "batch" axes along B and whole
  along the other axes (a no-op outside the training loop's `sharding.activation_rules`)."""
  return sharding.constrain_activation(features, ("batch",) + (None,) * (features.ndim - 1))


def _kernel_init(zero_init: bool, names: Sequence[Optional[str]]):
  initializer = nn.initializers.zeros_init() if zero_init else nn.initializers.lecun_normal()
  return nn.with_logical_partitioning(initializer, tuple(names))


def _channel_param_init(initializer):
  return nn.with_logical_partitioning(initializer, ("channels",))


class _Conv(nn.Module):
  """Stride-1 "SAME" convolution over `spatial_dims` axes, kernel named (None.., None, channels)."""
  features: int  # output channels
  kernel_size: int = 3  # the same extent on every spatial axis
  zero_init: bool = False  # zero kernel and bias: the layer outputs exactly 0 at initialisation
  use_bias: bool = True
  dtype: Dtype = jnp.float32  # compute dtype
  param_dtype: Dtype = jnp.float32
  spatial_dims: ClassVar[int] = 2

  @nn.compact
  def __call__(self, features: jax.Array) -> jax.Array:  # [B, *spatial, Cin] -> [B, *spatial, Cout]
    return batch_sharded(nn.Conv(
        self.features, (self.kernel_size,) * self.spatial_dims, padding="SAME",
        use_bias=self.use_bias, dtype=self.dtype, param_dtype=self.param_dtype,
        kernel_init=_kernel_init(self.zero_init, (None,) * (self.spatial_dims + 1) + ("channels",)),
        bias_init=_channel_param_init(nn.initializers.zeros_init()), name="conv")(features))


class Conv2D(_Conv):
  """2D convolution on [B, H, W, C]."""
  spatial_dims: ClassVar[int] = 2


class Conv3D(_Conv):
  """3D convolution on [B, D, H, W, C]."""
  spatial_dims: ClassVar[int] = 3


class Dense(nn.Module):
  """Dense layer whose kernel [in, out] carries the logical names `kernel_axes`."""
  features: int  # output units
  kernel_axes: tuple[Optional[str], Optional[str]] = ("embed", "mlp")  # names of [in, out]
  zero_init: bool = False  # zero kernel and bias: outputs exactly 0 at initialisation
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, inputs: jax.Array) -> jax.Array:  # [B, ..., in] -> [B, ..., out]
    return batch_sharded(nn.Dense(
        self.features, dtype=self.dtype, param_dtype=self.param_dtype,
        kernel_init=_kernel_init(self.zero_init, self.kernel_axes),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(),
                                               (self.kernel_axes[1],)),
        name="dense")(inputs))


def group_count(channels: int, num_groups: int) -> int:
  """The largest group count <= num_groups that divides `channels`."""
  return math.gcd(channels, num_groups)


class GroupNorm(nn.Module):
  """Group normalisation computed in float32, returned in `dtype`; works on any [B, ..., C]."""
  num_groups: int = 32  # reduced to a divisor of the channel count when needed
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, features: jax.Array) -> jax.Array:
    normalised = nn.GroupNorm(
        num_groups=group_count(features.shape[-1], self.num_groups), dtype=jnp.float32,
        param_dtype=self.param_dtype,
        scale_init=_channel_param_init(nn.initializers.ones_init()),
        bias_init=_channel_param_init(nn.initializers.zeros_init()),
        name="norm")(features.astype(jnp.float32))
    return normalised.astype(self.dtype)


class AdaptiveGroupNorm(nn.Module):
  """Group normalisation whose per-channel scale and shift are predicted from a condition vector.

  out = normalise(x) * (1 + scale(c)) + shift(c); the projection is zero-initialised, so at
  initialisation the layer is a plain (affine-free) group normalisation.
  """
  num_groups: int = 32
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, features: jax.Array, condition: jax.Array) -> jax.Array:
    # features [B, ..., C], condition [B, E]
    channels = features.shape[-1]
    normalised = nn.GroupNorm(
        num_groups=group_count(channels, self.num_groups), use_scale=False, use_bias=False,
        dtype=jnp.float32, param_dtype=self.param_dtype,
        name="norm")(features.astype(jnp.float32))
    modulation = Dense(2 * channels, kernel_axes=(None, "channels"), zero_init=True,
                       dtype=jnp.float32, param_dtype=self.param_dtype,
                       name="modulation")(condition.astype(jnp.float32))  # [B, 2C]
    broadcast_shape = (features.shape[0],) + (1,) * (features.ndim - 2) + (channels,)
    scale, shift = (part.reshape(broadcast_shape) for part in jnp.split(modulation, 2, axis=-1))
    return (normalised * (1.0 + scale) + shift).astype(self.dtype)


class _ResBlock(nn.Module):
  """Pre-activation residual block: (norm, act, conv) x 2 plus a 1x1-projected skip.

  With a `condition` vector the norms are adaptive (scale/shift predicted from it).
  """
  features: int  # output channels
  num_groups: int = 32  # group-norm groups
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  spatial_dims: ClassVar[int] = 2

  def _conv(self, features: int, kernel_size: int, name: str) -> _Conv:
    conv_class = Conv2D if self.spatial_dims == 2 else Conv3D
    return conv_class(features, kernel_size, dtype=self.dtype, param_dtype=self.param_dtype,
                      name=name)

  def _norm(self, features: jax.Array, condition: Optional[jax.Array], name: str) -> jax.Array:
    if condition is None:
      return GroupNorm(self.num_groups, self.dtype, self.param_dtype, name=name)(features)
    return AdaptiveGroupNorm(self.num_groups, self.dtype, self.param_dtype,
                             name=name)(features, condition)

  @nn.compact
  def __call__(self, features: jax.Array, condition: Optional[jax.Array] = None) -> jax.Array:
    # features [B, *spatial, Cin], condition [B, E] or None -> [B, *spatial, features]
    features = features.astype(self.dtype)
    hidden = self._conv(self.features, 3, "conv1")(
        activation(self._norm(features, condition, "norm1")))
    hidden = self._conv(self.features, 3, "conv2")(
        activation(self._norm(hidden, condition, "norm2")))
    skip = features
    if features.shape[-1] != self.features:
      skip = self._conv(self.features, 1, "skip")(features)
    return skip + hidden


class ResBlock2D(_ResBlock):
  """Residual block on [B, H, W, C] images."""
  spatial_dims: ClassVar[int] = 2


class ResBlock3D(_ResBlock):
  """Residual block on [B, D, H, W, C] volumes."""
  spatial_dims: ClassVar[int] = 3


def residual_block_class(block_class: type[_ResBlock], remat: bool) -> type[nn.Module]:
  """`block_class`, rematerialised in the backward pass (activation checkpointing) if `remat`."""
  return nn.remat(block_class) if remat else block_class


def downsample(features: jax.Array, factors: Sequence[int]) -> jax.Array:
  """Average pooling over the spatial axes of [B, *spatial, C] by per-axis integer `factors`."""
  factors = tuple(factors)
  return nn.avg_pool(features, factors, strides=factors, padding="VALID")


def upsample(features: jax.Array, factors: Sequence[int]) -> jax.Array:
  """Nearest-neighbour upsampling of [B, *spatial, C] by per-axis integer `factors`."""
  for axis, factor in enumerate(factors, start=1):
    if factor > 1:
      features = jnp.repeat(features, factor, axis=axis)
  return features


def resize_image(image: jax.Array, size: int) -> jax.Array:
  """Resizes [B, H, W, C] images to [B, size, size, C] (antialiased linear); no-op if same size."""
  if size <= 0 or image.shape[1:3] == (size, size):
    return image
  return jax.image.resize(image, (image.shape[0], size, size, image.shape[-1]), "linear",
                          antialias=True)
