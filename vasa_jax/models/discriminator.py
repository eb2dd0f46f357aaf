"""Multi-scale patch discriminator (pix2pixHD style) and its hinge and feature-matching losses.

MegaPortraits trains its generator against a multi-scale patch discriminator with a hinge loss
(weight 1) and feature matching (weight 40). Here `num_scales` patch discriminators see the image
at full resolution, then average-pooled by 2 each time (pix2pixHD's 3x3/stride-2 pooling that does
not count padding). Each is a stack of 4x4 convs: `num_layers` of stride 2 with doubling channels
(capped at `max_features`), one of stride 1, then a stride-1 conv to one logit per patch. Leaky
ReLU (0.2) after every conv but the last; instance normalisation (float32) after all but the first
and last when `instance_norm`. No spectral normalisation.

The losses take the discriminator's outputs (one array or any nested list of per-scale arrays) and
average over scales and layers:
  hinge_d_loss = mean_s [mean relu(1 - D_s(real)) + mean relu(1 + D_s(fake))]
  hinge_g_loss = mean_s [-mean D_s(fake)]
  feature_matching_loss = mean_{s,l} mean |F_sl(real) - F_sl(fake)|, real features held constant.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from vasa_jax.models import layers

Dtype = Any

# Slope of the leaky ReLU after the discriminator's convs (pix2pixHD).
NEGATIVE_SLOPE = 0.2


class PatchDiscriminator(nn.Module):
  """One scale: image [B, H, W, C] -> (feature maps after each hidden conv, logits).

  With `num_layers` = n: features [B, H/2, W/2, f], ..., [B, H/2^n, W/2^n, min(f 2^(n-1), max)],
  [B, H/2^n, W/2^n, min(f 2^n, max)] (n + 1 maps) and float32 logits [B, H/2^n, W/2^n, 1].
  """
  base_features: int = 64  # channels of the first conv
  num_layers: int = 3  # stride-2 convs
  max_features: int = 512  # channel cap
  instance_norm: bool = True  # instance normalisation after the hidden convs but the first
  dtype: Dtype = jnp.float32  # compute dtype
  param_dtype: Dtype = jnp.float32

  def _conv(self, features: int, stride: int, name: str) -> nn.Conv:
    # Stride 2 pads 1 on each side (H -> H / 2); stride 1 pads "SAME" (H -> H).
    padding = ((1, 1), (1, 1)) if stride == 2 else "SAME"
    return nn.Conv(
        features, (4, 4), strides=(stride, stride), padding=padding, dtype=self.dtype,
        param_dtype=self.param_dtype,
        kernel_init=nn.with_logical_partitioning(nn.initializers.lecun_normal(),
                                                 (None, None, None, "channels")),
        name=name)

  def _normalise(self, features: jax.Array, name: str) -> jax.Array:
    if not self.instance_norm:
      return features
    normalised = nn.InstanceNorm(dtype=jnp.float32, param_dtype=self.param_dtype,
                                 name=name)(features.astype(jnp.float32))
    return normalised.astype(self.dtype)

  @nn.compact
  def __call__(self, images: jax.Array) -> tuple[list[jax.Array], jax.Array]:
    features = images.astype(self.dtype)
    feature_maps = []
    for layer in range(self.num_layers + 1):
      channels = min(self.base_features * 2**layer, self.max_features)
      stride = 2 if layer < self.num_layers else 1
      features = layers.batch_sharded(self._conv(channels, stride, f"conv_{layer}")(features))
      if layer > 0:
        features = self._normalise(features, f"norm_{layer}")
      features = nn.leaky_relu(features, NEGATIVE_SLOPE)
      feature_maps.append(features)
    logits = self._conv(1, 1, "logits")(features)  # [B, H / 2^n, W / 2^n, 1]
    return feature_maps, logits.astype(jnp.float32)


class MultiScaleDiscriminator(nn.Module):
  """`num_scales` patch discriminators on the image halved in size from one scale to the next.

  Call: images [B, H, W, C] (generated or real frames in [-1, 1], optionally with conditioning
  channels) -> (features, logits): features[s] is scale s's list of num_layers + 1 feature maps
  and logits[s] its [B, H / 2^(s + num_layers), W / 2^(s + num_layers), 1] float32 patch logits.
  """
  num_scales: int = 2  # discriminators; scale s sees the image downsampled by 2^s
  base_features: int = 64  # channels of each discriminator's first conv
  num_layers: int = 3  # stride-2 convs per discriminator
  max_features: int = 512  # channel cap
  instance_norm: bool = True  # instance normalisation in the hidden layers
  dtype: Dtype = jnp.float32  # compute dtype
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, images: jax.Array) -> tuple[list[list[jax.Array]], list[jax.Array]]:
    features_per_scale, logits_per_scale = [], []
    for scale in range(self.num_scales):
      if scale > 0:
        images = nn.avg_pool(images, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)),
                             count_include_pad=False)  # [B, H / 2^s, W / 2^s, C]
      features, logits = PatchDiscriminator(
          base_features=self.base_features, num_layers=self.num_layers,
          max_features=self.max_features, instance_norm=self.instance_norm, dtype=self.dtype,
          param_dtype=self.param_dtype, name=f"scale_{scale}")(images)
      features_per_scale.append(features)
      logits_per_scale.append(logits)
    return features_per_scale, logits_per_scale


def _mean_over(values: list[jax.Array]) -> jax.Array:
  return sum(values) / len(values)


def hinge_d_loss(real_logits: Any, fake_logits: Any) -> jax.Array:
  """Discriminator hinge loss, averaged over scales; 0 when real >= 1 and fake <= -1 everywhere.

  real_logits, fake_logits: an array or a (nested) list of per-scale arrays of the same structure.
  """
  real, fake = jax.tree.leaves(real_logits), jax.tree.leaves(fake_logits)
  if len(real) != len(fake):
    raise ValueError(f"{len(real)} real but {len(fake)} fake logit arrays")
  return _mean_over([
      jnp.mean(jax.nn.relu(1.0 - r.astype(jnp.float32))) +
      jnp.mean(jax.nn.relu(1.0 + f.astype(jnp.float32))) for r, f in zip(real, fake)])


def hinge_g_loss(fake_logits: Any) -> jax.Array:
  """Generator hinge loss -mean D(fake), averaged over scales (an array or list of arrays)."""
  return _mean_over([-jnp.mean(f.astype(jnp.float32)) for f in jax.tree.leaves(fake_logits)])


def feature_matching_loss(real_features: Any, fake_features: Any) -> jax.Array:
  """Mean L1 between the discriminator's features of real and generated images.

  Averaged over every scale and layer (the nested lists `MultiScaleDiscriminator` returns); the
  real features are treated as constants (no gradient flows into them).
  """
  real, fake = jax.tree.leaves(real_features), jax.tree.leaves(fake_features)
  if len(real) != len(fake):
    raise ValueError(f"{len(real)} real but {len(fake)} fake feature maps")
  return _mean_over([
      jnp.mean(jnp.abs(jax.lax.stop_gradient(r).astype(jnp.float32) - f.astype(jnp.float32)))
      for r, f in zip(real, fake)])
