"""Normalisation of motion latents [z_pose, z_dyn] by dataset statistics.

The diffusion model works on standardised motion; the statistics are arrays stored with the
checkpoint (a `MotionStatistics` is a pytree) and inverted after sampling.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp


class MotionStatistics(NamedTuple):
  """Per-dimension mean and standard deviation of motion latents, each [M] float32."""
  mean: jax.Array
  std: jax.Array

  def normalize(self, motion: jax.Array) -> jax.Array:
    """(motion - mean) / std on [..., M]."""
    return (motion - self.mean) / self.std

  def denormalize(self, normalized_motion: jax.Array) -> jax.Array:
    """The inverse of `normalize`: normalized * std + mean on [..., M]."""
    return normalized_motion * self.std + self.mean


def motion_statistics(motion: jax.Array, frame_mask: Optional[jax.Array] = None,
                      min_std: float = 1e-4) -> MotionStatistics:
  """Statistics of motion [..., M] over every leading axis, counting frames where `frame_mask`
  [...] is True (None: all); stds are floored at `min_std` so constant dimensions stay finite."""
  motion = jnp.asarray(motion, jnp.float32).reshape(-1, motion.shape[-1])  # [N, M]
  weights = (jnp.ones(motion.shape[:1]) if frame_mask is None
             else jnp.asarray(frame_mask, jnp.float32).reshape(-1))[:, None]  # [N, 1]
  count = jnp.maximum(jnp.sum(weights), 1.0)
  mean = jnp.sum(motion * weights, axis=0) / count
  variance = jnp.sum(jnp.square(motion - mean) * weights, axis=0) / count
  return MotionStatistics(mean=mean, std=jnp.maximum(jnp.sqrt(variance), min_std))
