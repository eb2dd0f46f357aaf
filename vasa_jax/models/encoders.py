"""The encoders that split a face image into VASA-1's factors.

- `AppearanceEncoder`: image -> posed 3D appearance volume (MegaPortraits' `v_s`).
- `IdentityEncoder`: image -> identity code `z_id` (ResNet-style global descriptor).
- `MotionEncoder`: image -> head pose `z_pose` [B, 7] and facial dynamics `z_dyn` [B, dyn_dim]
  (two ResNet-18-style networks, one per factor).

Images are [B, H, W, 3] in [-1, 1]; volumes are [B, D, H, W, C].
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from vasa_jax.models import layers
from vasa_jax.models import warping

POOLINGS = ("mean", "flatten")


class ResNetEncoder(nn.Module):
  """Image [B, H, W, 3] -> pooled features [B, F].

  A 3x3 stem conv, then one stage per entry of `stage_channels`: every stage halves the resolution
  (average pooling) and applies `blocks_per_stage` residual blocks. `pooling` "mean" averages the
  final [h, w, C] map globally (ResNet; F = C); "flatten" keeps every position (F = h * w * C), a
  spatial readout for small images in which a local feature such as the mouth covers a few pixels.
  """
  stage_channels: Sequence[int]  # channels of each stage (ResNet-18: 64, 128, 256, 512)
  blocks_per_stage: int = 2  # residual blocks per stage (ResNet-18: 2)
  input_size: int = 0  # images are resized to input_size^2 first; 0: used as given
  pooling: str = "mean"  # one of POOLINGS
  num_groups: int = 32  # group-norm groups
  remat: bool = False  # rematerialise the residual blocks in the backward pass
  dtype: layers.Dtype = jnp.float32
  param_dtype: layers.Dtype = jnp.float32

  @nn.compact
  def __call__(self, image: jax.Array) -> jax.Array:
    block_class = layers.residual_block_class(layers.ResBlock2D, self.remat)
    features = layers.resize_image(image, self.input_size).astype(self.dtype)  # [B, S, S, 3]
    features = layers.Conv2D(self.stage_channels[0], dtype=self.dtype,
                             param_dtype=self.param_dtype, name="stem")(features)
    for stage, channels in enumerate(self.stage_channels):
      features = layers.downsample(features, (2, 2))
      for block in range(self.blocks_per_stage):
        features = block_class(channels, self.num_groups, self.dtype, self.param_dtype,
                               name=f"stage{stage}_block{block}")(features)
    features = layers.activation(layers.GroupNorm(
        self.num_groups, self.dtype, self.param_dtype, name="final_norm")(features))
    features = features.astype(jnp.float32)  # [B, h, w, C]
    if self.pooling == "mean":
      return jnp.mean(features, axis=(1, 2))  # [B, C]
    if self.pooling == "flatten":
      return features.reshape(features.shape[0], -1)  # [B, h * w * C]
    raise ValueError(f"unknown pooling {self.pooling!r}; choose one of {POOLINGS}")


class AppearanceEncoder(nn.Module):
  """Image [B, S, S, 3] -> posed appearance volume [B, volume_depth, S/8, S/8, volume_channels].

  2D residual stages (the first at full resolution, each later one halving it; four stages reach
  S/8), a 1x1 conv to volume_channels * volume_depth features, a reshape into a 3D volume, and 3D
  residual blocks.
  """
  stage_channels: Sequence[int]  # channels of the 2D stages; len(stage_channels) - 1 halvings
  blocks_per_stage: int  # 2D residual blocks per stage
  volume_channels: int  # C of the volume (paper: 96)
  volume_depth: int  # D of the volume (paper: 16)
  volume_blocks: int  # 3D residual blocks on the volume
  num_groups: int = 32
  remat: bool = False
  dtype: layers.Dtype = jnp.float32
  param_dtype: layers.Dtype = jnp.float32

  @nn.compact
  def __call__(self, image: jax.Array) -> jax.Array:
    block_2d = layers.residual_block_class(layers.ResBlock2D, self.remat)
    block_3d = layers.residual_block_class(layers.ResBlock3D, self.remat)
    features = layers.Conv2D(self.stage_channels[0], kernel_size=7, dtype=self.dtype,
                             param_dtype=self.param_dtype,
                             name="stem")(image.astype(self.dtype))  # [B, S, S, C0]
    for stage, channels in enumerate(self.stage_channels):
      if stage > 0:
        features = layers.downsample(features, (2, 2))
      for block in range(self.blocks_per_stage):
        features = block_2d(channels, self.num_groups, self.dtype, self.param_dtype,
                            name=f"stage{stage}_block{block}")(features)
    # No group norm before the projection: a per-image norm removes the image's colour
    # statistics, which the volume has to carry (the last residual block's output goes in as is).
    features = layers.activation(features)
    features = layers.Conv2D(self.volume_channels * self.volume_depth, kernel_size=1,
                             dtype=self.dtype, param_dtype=self.param_dtype,
                             name="to_volume")(features)  # [B, h, w, D*C]
    batch, height, width, _ = features.shape
    appearance_volume = features.reshape(
        batch, height, width, self.volume_depth, self.volume_channels).transpose(
            0, 3, 1, 2, 4)  # [B, D, h, w, C]
    for block in range(self.volume_blocks):
      appearance_volume = block_3d(self.volume_channels, self.num_groups, self.dtype,
                                   self.param_dtype, name=f"volume_block{block}")(
                                       appearance_volume)
    return appearance_volume


class IdentityEncoder(nn.Module):
  """Image [B, H, W, 3] -> identity code z_id [B, identity_dim] (float32)."""
  identity_dim: int  # size of z_id (paper: 512)
  stage_channels: Sequence[int]  # ResNet stage channels
  blocks_per_stage: int = 2
  input_size: int = 0  # images are resized to input_size^2 first; 0: used as given
  num_groups: int = 32
  remat: bool = False
  dtype: layers.Dtype = jnp.float32
  param_dtype: layers.Dtype = jnp.float32

  @nn.compact
  def __call__(self, image: jax.Array) -> jax.Array:
    pooled = ResNetEncoder(self.stage_channels, self.blocks_per_stage, self.input_size,
                           num_groups=self.num_groups, remat=self.remat, dtype=self.dtype,
                           param_dtype=self.param_dtype, name="backbone")(image)  # [B, C]
    return layers.Dense(self.identity_dim, dtype=jnp.float32, param_dtype=self.param_dtype,
                        name="head")(pooled)  # [B, identity_dim]


class MotionEncoder(nn.Module):
  """Image [B, H, W, 3] -> (z_pose [B, 7], z_dyn [B, dyn_dim]), both float32.

  z_pose = (yaw, pitch, roll, tx, ty, tz, log_scale), in the conventions of `warping`: each group
  is tanh-bounded by its `max_*` field. The pose head is zero-initialised, so every image starts
  at the identity pose (no rotation, no translation, scale 1). Pose and dynamics have separate
  backbones, as in MegaPortraits.
  """
  dyn_dim: int  # size of z_dyn (paper-size config: 256)
  stage_channels: Sequence[int]  # ResNet stage channels of each backbone
  blocks_per_stage: int = 2
  input_size: int = 0  # images are resized to input_size^2 first; 0: used as given
  max_rotation: float = 1.5  # bound of |yaw|, |pitch|, |roll| in radians
  max_translation: float = 0.5  # bound of |tx|, |ty|, |tz| in normalised coordinates
  max_log_scale: float = 0.5  # bound of |log scale|
  pooling: str = "mean"  # readout of both backbones (ResNetEncoder.pooling)
  num_groups: int = 32
  remat: bool = False
  dtype: layers.Dtype = jnp.float32
  param_dtype: layers.Dtype = jnp.float32

  def _backbone(self, name: str) -> ResNetEncoder:
    return ResNetEncoder(self.stage_channels, self.blocks_per_stage, self.input_size,
                         self.pooling, self.num_groups, self.remat, self.dtype, self.param_dtype,
                         name=name)

  @nn.compact
  def __call__(self, image: jax.Array) -> tuple[jax.Array, jax.Array]:
    pose_features = self._backbone("pose_backbone")(image)  # [B, C]
    raw_pose = layers.Dense(warping.POSE_SIZE, kernel_axes=("embed", None), zero_init=True,
                            dtype=jnp.float32, param_dtype=self.param_dtype,
                            name="pose_head")(pose_features)  # [B, 7]
    bounds = jnp.array([self.max_rotation] * 3 + [self.max_translation] * 3
                       + [self.max_log_scale], jnp.float32)
    z_pose = jnp.tanh(raw_pose) * bounds  # [B, 7]
    dynamics_features = self._backbone("dynamics_backbone")(image)  # [B, C]
    z_dyn = layers.Dense(self.dyn_dim, dtype=jnp.float32, param_dtype=self.param_dtype,
                         name="dynamics_head")(dynamics_features)  # [B, dyn_dim]
    return z_pose, z_dyn
