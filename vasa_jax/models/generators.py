"""The generators of the face autoencoder (MegaPortraits' w_s->c, w_c->d, G3D and G2D).

- `WarpingGenerator`: (z_dyn, z_id) -> non-rigid 3D flow, keypoint-free: a dense seed grid grown
  by 3D residual blocks with adaptive group normalisation conditioned on [z_dyn, z_id].
- `CanonicalUNet` (G3D): a 3D U-Net refining the canonical appearance volume.
- `Decoder2D` (G2D): orthographic projection of a posed volume, 2D residual blocks, upsampling to
  the image resolution, tanh RGB.

Volumes are [B, D, H, W, C]; flows are [B, D, H, W, 3] offsets in normalised (x, y, z) coordinates.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from vasa_jax.models import layers


class WarpingGenerator(nn.Module):
  """(z_dyn [B, dyn_dim], z_id [B, identity_dim]) -> flow [B, D, H, W, 3] (float32).

  The condition [z_dyn, z_id] is projected by a dense layer to a seed grid of `seed_channels` at
  (D, H, W) / 2^(len(level_channels) - 1) (depth at least 1), then each level applies residual
  blocks with adaptive group normalisation and the next one doubles the resolution (depth only
  while below D). The output conv is zero-initialised, so at initialisation the flow is exactly 0
  and the warp is purely rigid; the flow is bounded by `max_flow` (tanh).
  """
  volume_shape: tuple[int, int, int]  # (D, H, W) of the flow: the appearance volume's shape
  seed_channels: int  # channels of the dense seed grid
  level_channels: Sequence[int]  # channels of each level, coarsest first
  blocks_per_level: int = 1  # adaptive residual blocks per level
  max_flow: float = 0.5  # bound of every flow component in normalised coordinates
  num_groups: int = 32
  remat: bool = False
  dtype: layers.Dtype = jnp.float32
  param_dtype: layers.Dtype = jnp.float32

  def seed_shape(self) -> tuple[int, int, int]:
    """(d, h, w) of the seed grid."""
    halvings = len(self.level_channels) - 1
    depth, height, width = self.volume_shape
    if height % 2**halvings or width % 2**halvings:
      raise ValueError(f"volume {self.volume_shape} is not divisible by 2^{halvings} "
                       f"({len(self.level_channels)} warping levels)")
    return max(depth >> halvings, 1), height >> halvings, width >> halvings

  @nn.compact
  def __call__(self, z_dyn: jax.Array, z_id: jax.Array) -> jax.Array:
    block_class = layers.residual_block_class(layers.ResBlock3D, self.remat)
    condition = jnp.concatenate([z_dyn, z_id], axis=-1).astype(jnp.float32)  # [B, E]
    seed_shape = self.seed_shape()
    features = layers.Dense(math.prod(seed_shape) * self.seed_channels, dtype=self.dtype,
                            param_dtype=self.param_dtype, name="seed")(condition)
    features = features.reshape(
        (condition.shape[0],) + seed_shape + (self.seed_channels,))  # [B, d, h, w, seed_C]
    for level, channels in enumerate(self.level_channels):
      if level > 0:
        features = layers.upsample(features, tuple(
            2 if size < target else 1
            for size, target in zip(features.shape[1:4], self.volume_shape)))
      for block in range(self.blocks_per_level):
        features = block_class(channels, self.num_groups, self.dtype, self.param_dtype,
                               name=f"level{level}_block{block}")(features, condition)
    if features.shape[1:4] != tuple(self.volume_shape):
      raise ValueError(f"warping levels reach {features.shape[1:4]}, not the volume's "
                       f"{tuple(self.volume_shape)}: the depth must be a power-of-2 multiple "
                       "of the seed depth")
    features = layers.activation(layers.GroupNorm(
        self.num_groups, self.dtype, self.param_dtype, name="final_norm")(features))
    flow = layers.Conv3D(3, zero_init=True, dtype=jnp.float32, param_dtype=self.param_dtype,
                         name="to_flow")(features)  # [B, D, H, W, 3]
    return self.max_flow * jnp.tanh(flow)


def _halving_factors(spatial_shape: Sequence[int]) -> tuple[int, ...]:
  """2 on every even spatial axis, 1 on the others (a depth of 1 stays 1)."""
  return tuple(2 if size % 2 == 0 else 1 for size in spatial_shape)


class CanonicalUNet(nn.Module):
  """G3D: canonical volume [B, D, H, W, C] -> refined volume of the same shape.

  A 3D U-Net: each level after the first halves every even spatial axis, the decoder upsamples and
  concatenates the skip of the same level. The output is the input plus a zero-initialised
  residual, so at initialisation G3D is the identity.
  """
  level_channels: Sequence[int]  # channels of each level, finest first
  blocks_per_level: int = 1  # residual blocks per level, in the encoder and in the decoder
  num_groups: int = 32
  remat: bool = False
  dtype: layers.Dtype = jnp.float32
  param_dtype: layers.Dtype = jnp.float32

  @nn.compact
  def __call__(self, volume: jax.Array) -> jax.Array:
    block_class = layers.residual_block_class(layers.ResBlock3D, self.remat)

    def blocks(features, channels, prefix):
      for block in range(self.blocks_per_level):
        features = block_class(channels, self.num_groups, self.dtype, self.param_dtype,
                               name=f"{prefix}_block{block}")(features)
      return features

    features = layers.Conv3D(self.level_channels[0], dtype=self.dtype,
                             param_dtype=self.param_dtype, name="input")(volume.astype(self.dtype))
    skips, level_factors = [], []
    for level, channels in enumerate(self.level_channels):
      if level > 0:
        level_factors.append(_halving_factors(features.shape[1:4]))
        features = layers.downsample(features, level_factors[-1])
      features = blocks(features, channels, f"down{level}")  # [B, D/2^l, H/2^l, W/2^l, C_l]
      skips.append(features)
    for level in reversed(range(len(self.level_channels) - 1)):
      features = layers.upsample(features, level_factors[level])
      features = jnp.concatenate([features, skips[level]], axis=-1)
      features = blocks(features, self.level_channels[level], f"up{level}")
    features = layers.activation(layers.GroupNorm(
        self.num_groups, self.dtype, self.param_dtype, name="final_norm")(features))
    residual = layers.Conv3D(volume.shape[-1], zero_init=True, dtype=self.dtype,
                             param_dtype=self.param_dtype, name="output")(features)
    return volume + residual.astype(volume.dtype)


class Decoder2D(nn.Module):
  """G2D: posed volume [B, D, h, w, C] -> image [B, h * 2^U, w * 2^U, 3] in [-1, 1] (float32).

  Orthographic projection (depth folded into channels, then a 1x1 conv), `residual_blocks` 2D
  residual blocks at the volume resolution, then U = len(upsample_channels) steps of 2x
  nearest-neighbour upsampling, each followed by a residual block, and a tanh RGB conv. With a
  `condition` vector (z_dyn) every residual block normalises adaptively on it (zero-initialised
  modulation: at initialisation the output does not depend on it).
  """
  channels: int  # width after the projection (paper: 512)
  residual_blocks: int  # residual blocks at the volume resolution (paper: 8)
  upsample_channels: Sequence[int]  # channels after each 2x upsampling
  num_groups: int = 32
  remat: bool = False
  dtype: layers.Dtype = jnp.float32
  param_dtype: layers.Dtype = jnp.float32

  @nn.compact
  def __call__(self, posed_volume: jax.Array,
               condition: Optional[jax.Array] = None) -> jax.Array:
    # posed_volume [B, D, h, w, C], condition [B, E] or None
    block_class = layers.residual_block_class(layers.ResBlock2D, self.remat)
    batch, depth, height, width, channels = posed_volume.shape
    projected = posed_volume.transpose(0, 2, 3, 1, 4).reshape(
        batch, height, width, depth * channels)  # [B, h, w, D*C]
    features = layers.Conv2D(self.channels, kernel_size=1, dtype=self.dtype,
                             param_dtype=self.param_dtype,
                             name="projection")(projected.astype(self.dtype))  # [B, h, w, C2]
    for block in range(self.residual_blocks):
      features = block_class(self.channels, self.num_groups, self.dtype, self.param_dtype,
                             name=f"block{block}")(features, condition)
    for step, step_channels in enumerate(self.upsample_channels):
      features = layers.upsample(features, (2, 2))
      features = block_class(step_channels, self.num_groups, self.dtype, self.param_dtype,
                             name=f"upsample{step}")(features, condition)
    # No group norm before the RGB conv: a per-image norm would remove the colours the volume
    # carries, and the codes would have to paint them back (a swap then repaints the frame).
    features = layers.activation(features)
    rgb = layers.Conv2D(3, dtype=jnp.float32, param_dtype=self.param_dtype,
                        name="to_rgb")(features)  # [B, S, S, 3]
    return jnp.tanh(rgb)
