"""Reverse-process steps from a predicted X^0 (the network predicts the clean motion, not noise).

Every step goes from timestep `t` to an earlier `t_prev` (not necessarily t - 1: samplers stride
through the training steps); `t_prev = -1` is the clean signal (alpha_bar = 1), where both steps
return the predicted X^0 exactly. Timesteps are int scalars or [B] arrays.

`denoise_fn(x_t, t, conditions, drops) -> predicted x0` is the network with its parameters bound
(`motion_dit.make_denoise_fn`, optionally wrapped by `guidance.with_guidance`); `conditions` and
`drops` are pytrees of arrays with a leading batch axis.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Optional

import jax
import jax.numpy as jnp
import numpy as np

from vasa_jax.diffusion.schedules import Schedule, broadcast_to_rank

DenoiseFn = Callable[[jax.Array, jax.Array, Any, Optional[Mapping[str, jax.Array]]], jax.Array]
SAMPLING_METHODS = ("ddim", "ddpm")


def sampling_timesteps(num_train_steps: int, num_sampling_steps: int) -> np.ndarray:
  """`num_sampling_steps` distinct timesteps, evenly strided from num_train_steps - 1 down to 0."""
  if not 1 <= num_sampling_steps <= num_train_steps:
    raise ValueError(f"num_sampling_steps {num_sampling_steps} must be in [1, {num_train_steps}]")
  if num_sampling_steps == 1:
    return np.array([num_train_steps - 1], np.int32)
  return np.round(np.linspace(num_train_steps - 1, 0, num_sampling_steps)).astype(np.int32)


def log_alpha_bar_at(schedule: Schedule, t: jax.Array, rank: int) -> jax.Array:
  """log alpha_bar_t shaped [B, 1, ...] for rank-`rank` arrays, with alpha_bar_{-1} = 1."""
  t = jnp.asarray(t)
  values = jnp.where(t >= 0, schedule.log_alphas_cumprod[jnp.maximum(t, 0)], 0.0)
  return broadcast_to_rank(values, rank)


def _step_coefficients(schedule: Schedule, t: jax.Array, t_prev: jax.Array,
                       rank: int) -> tuple[jax.Array, ...]:
  """(alpha_bar_t, alpha_bar_prev, 1 - alpha_bar_t, 1 - alpha_bar_prev, b_t = 1 - alpha_bar_t /
  alpha_bar_prev), each [B, 1, ...], from logs (expm1 keeps the small differences near t = 0
  accurate in float32)."""
  log_alpha_bar = log_alpha_bar_at(schedule, t, rank)
  log_alpha_bar_prev = log_alpha_bar_at(schedule, t_prev, rank)
  return (jnp.exp(log_alpha_bar), jnp.exp(log_alpha_bar_prev), -jnp.expm1(log_alpha_bar),
          -jnp.expm1(log_alpha_bar_prev), -jnp.expm1(log_alpha_bar - log_alpha_bar_prev))


def ddpm_posterior(schedule: Schedule, x_t: jax.Array, t: jax.Array, t_prev: jax.Array,
                   predicted_x0: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Mean [B, ...] and variance [B, 1, ...] of q(X^{t_prev} | X^t, X^0 = predicted_x0).

  With b_t = 1 - alpha_bar_t / alpha_bar_prev (for t_prev = t - 1: the schedule's beta_t):
    mean = (sqrt(alpha_bar_prev) b_t X^0 + sqrt(1 - b_t) (1 - alpha_bar_prev) X^t)
           / (1 - alpha_bar_t),
    variance = b_t (1 - alpha_bar_prev) / (1 - alpha_bar_t).
  """
  _, alpha_bar_prev, noise_variance, noise_variance_prev, step_beta = _step_coefficients(
      schedule, t, t_prev, x_t.ndim)
  mean = (jnp.sqrt(alpha_bar_prev) * step_beta * predicted_x0
          + jnp.sqrt(1.0 - step_beta) * noise_variance_prev * x_t) / noise_variance
  variance = step_beta * noise_variance_prev / noise_variance
  return mean, variance


def ddpm_step(schedule: Schedule, x_t: jax.Array, t: jax.Array, t_prev: jax.Array,
              predicted_x0: jax.Array, noise: jax.Array) -> jax.Array:
  """A sample of X^{t_prev} from the DDPM posterior; `noise` ~ N(0, I) shaped like x_t."""
  mean, variance = ddpm_posterior(schedule, x_t, t, t_prev, predicted_x0)
  return mean + jnp.sqrt(variance) * noise


def ddim_step(schedule: Schedule, x_t: jax.Array, t: jax.Array, t_prev: jax.Array,
              predicted_x0: jax.Array, noise: jax.Array, eta: float = 0.0) -> jax.Array:
  """DDIM update to X^{t_prev}: eta = 0 is deterministic, eta = 1 samples the DDPM posterior.

  The implied noise is eps = (X^t - sqrt(alpha_bar_t) X^0) / sqrt(1 - alpha_bar_t), and
  X^{t_prev} = sqrt(alpha_bar_prev) X^0 + sqrt(1 - alpha_bar_prev - sigma^2) eps + sigma noise,
  sigma = eta sqrt((1 - alpha_bar_prev) / (1 - alpha_bar_t) (1 - alpha_bar_t / alpha_bar_prev)).
  """
  alpha_bar, alpha_bar_prev, noise_variance, noise_variance_prev, step_beta = (
      _step_coefficients(schedule, t, t_prev, x_t.ndim))
  implied_noise = (x_t - jnp.sqrt(alpha_bar) * predicted_x0) / jnp.sqrt(noise_variance)
  sigma = eta * jnp.sqrt(noise_variance_prev / noise_variance * step_beta)
  noise_scale = jnp.sqrt(jnp.maximum(noise_variance_prev - jnp.square(sigma), 0.0))
  return jnp.sqrt(alpha_bar_prev) * predicted_x0 + noise_scale * implied_noise + sigma * noise


def sample(denoise_fn: DenoiseFn, schedule: Schedule, x_start: jax.Array, conditions: Any,
           drops: Optional[Mapping[str, jax.Array]], rng: jax.Array, num_sampling_steps: int,
           method: str = "ddim", eta: float = 0.0) -> jax.Array:
  """Runs the reverse process from pure noise `x_start` [B, ...] to X^0 in a `lax.scan`.

  The scan visits `sampling_timesteps(schedule.num_steps, num_sampling_steps)`, each followed by
  the next (the last by -1); `num_sampling_steps` and `method` are static. One `denoise_fn` call
  per step.
  """
  if method not in SAMPLING_METHODS:
    raise ValueError(f"unknown sampling method {method!r}, expected one of {SAMPLING_METHODS}")
  timesteps = sampling_timesteps(schedule.num_steps, num_sampling_steps)
  previous_timesteps = np.append(timesteps[1:], -1).astype(np.int32)
  batch_size = x_start.shape[0]

  def step(x_t, step_inputs):
    t, t_prev, step_rng = step_inputs
    predicted_x0 = denoise_fn(x_t, jnp.full((batch_size,), t), conditions, drops)
    noise = jax.random.normal(step_rng, x_t.shape, x_t.dtype)
    if method == "ddpm":
      return ddpm_step(schedule, x_t, t, t_prev, predicted_x0, noise), None
    return ddim_step(schedule, x_t, t, t_prev, predicted_x0, noise, eta), None

  step_rngs = jax.random.split(rng, num_sampling_steps)
  x0, _ = jax.lax.scan(step, x_start, (jnp.asarray(timesteps), jnp.asarray(previous_timesteps),
                                       step_rngs))
  return x0
