"""Noise schedules, the forward (noising) process and the X^0-prediction loss.

Timesteps index the schedule's arrays: `t` in [0, num_steps), where `t = 0` is the first (least
noisy) step, `q(x_0 | x) = N(sqrt(1 - beta_0) x, beta_0)`; the clean signal itself has no index
(the samplers call it `t = -1`).
"""

from __future__ import annotations

import math
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

SCHEDULE_KINDS = ("linear", "cosine")


class Schedule(NamedTuple):
  """A noise schedule (a pytree of float32 arrays, each [num_steps]; jit- and scan-friendly)."""
  betas: jax.Array  # beta_t, the variance added by step t
  alphas_cumprod: jax.Array  # alpha_bar_t = prod_{s <= t} (1 - beta_s), decreasing in (0, 1)
  # log alpha_bar_t: ratios and 1 - alpha_bar near t = 0 are computed from it without the
  # float32 cancellation of 1 - alpha_bar_t / alpha_bar_s
  log_alphas_cumprod: jax.Array

  @property
  def num_steps(self) -> int:
    return self.betas.shape[0]


def make_schedule(kind: str, num_steps: int, beta_start: float = 1e-4, beta_end: float = 0.02,
                  cosine_offset: float = 0.008) -> Schedule:
  """The `kind` schedule ("linear" or "cosine") with `num_steps` training steps.

  linear: betas evenly spaced from `beta_start` to `beta_end` (Ho et al.), both scaled by
    1000 / num_steps so that any step count spans the same total noise as 1000 steps.
  cosine: alpha_bar(t) = cos^2(pi/2 (t/T + s) / (1 + s)) with offset s (Nichol & Dhariwal);
    betas clipped to 0.999.
  """
  if kind == "linear":
    scale = 1000.0 / num_steps
    betas = np.linspace(beta_start * scale, beta_end * scale, num_steps, dtype=np.float64)
  elif kind == "cosine":
    fractions = (np.arange(num_steps + 1, dtype=np.float64) / num_steps + cosine_offset) / (
        1.0 + cosine_offset)
    alpha_bar = np.cos(fractions * math.pi / 2) ** 2
    betas = np.clip(1.0 - alpha_bar[1:] / alpha_bar[:-1], 0.0, 0.999)
  else:
    raise ValueError(f"unknown schedule kind {kind!r}, expected one of {SCHEDULE_KINDS}")
  log_alphas_cumprod = np.cumsum(np.log1p(-betas))
  return Schedule(betas=jnp.asarray(betas, jnp.float32),
                  alphas_cumprod=jnp.asarray(np.exp(log_alphas_cumprod), jnp.float32),
                  log_alphas_cumprod=jnp.asarray(log_alphas_cumprod, jnp.float32))


def broadcast_to_rank(values: jax.Array, rank: int) -> jax.Array:
  """Per-example values [B] (or a scalar) shaped [B, 1, ..., 1] to broadcast against rank-`rank`."""
  values = jnp.asarray(values)
  return values.reshape(values.shape + (1,) * (rank - values.ndim))


def q_sample(schedule: Schedule, x0: jax.Array, t: jax.Array, noise: jax.Array) -> jax.Array:
  """X^t = sqrt(alpha_bar_t) X^0 + sqrt(1 - alpha_bar_t) noise; x0, noise [B, ...], t [B] int."""
  alpha_bar = broadcast_to_rank(schedule.alphas_cumprod[t], x0.ndim)  # [B, 1, ...]
  return jnp.sqrt(alpha_bar) * x0 + jnp.sqrt(1.0 - alpha_bar) * noise


def x0_loss(predicted_x0: jax.Array, x0: jax.Array,
            frame_mask: Optional[jax.Array] = None) -> jax.Array:
  """Mean squared error ||X^0 - H(X^t, t, C)||^2 per element, in float32, over the frames kept.

  predicted_x0, x0 [B, W, M]; frame_mask [B, W] bool (False: excluded), None: every frame.
  A batch without any kept frame has loss 0.
  """
  squared_error = jnp.square(predicted_x0.astype(jnp.float32) - x0.astype(jnp.float32))
  if frame_mask is None:
    return jnp.mean(squared_error)
  weights = frame_mask.astype(jnp.float32)[..., None]  # [B, W, 1]
  total = jnp.sum(squared_error * weights)
  count = jnp.sum(weights) * squared_error.shape[-1]
  return total / jnp.maximum(count, 1.0)


def velocity_loss(predicted_x0: jax.Array, x0: jax.Array, has_previous: jax.Array) -> jax.Array:
  """Mean squared error of the frame-to-frame steps, the step into the window included.

  predicted_x0, x0 [B, W, M]; has_previous [B] bool: whether the window continues a given frame
  (X_pre's last), whose step into the window then counts too; its error is the first frame's
  error, since the given frame is exact. Returns a float32 scalar.
  """
  predicted_x0, x0 = predicted_x0.astype(jnp.float32), x0.astype(jnp.float32)
  inside = jnp.mean(jnp.square(jnp.diff(predicted_x0, axis=1) - jnp.diff(x0, axis=1)),
                    axis=(1, 2))  # [B]
  entry = jnp.mean(jnp.square(predicted_x0[:, 0] - x0[:, 0]), axis=-1)  # [B]
  steps = x0.shape[1] - 1
  weights = has_previous.astype(jnp.float32)
  return jnp.mean((inside * steps + entry * weights) / (steps + weights))
