"""Exponential moving average of the weights, with the decay warmed up from the first step.

After the update at train step t (t = 0 for the first update; the state's `step` before it),

  ema_{t+1} = decay_t * ema_t + (1 - decay_t) * params_{t+1},
  decay_t = min(max_decay, (1 + t) / (10 + t)),

so the average follows the live weights closely early on (decay 0.1 at the first update, 0.5 at
t = 8, 0.9 at t = 80, 0.99 at t = 890, 0.999 at t = 8,990) and a checkpoint at any step samples
from mostly trained weights rather than from an average still dominated by the initialisation.
The ramp is TensorFlow's `tf.train.ExponentialMovingAverage(decay, num_updates=step)` warm-up,
which CompVis latent-diffusion's `LitEma` (ldm/modules/ema.py) and the Stable Diffusion code that
inherits it also use (there counted from 1).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax


def warmup_decay(step: jax.Array, max_decay: float) -> jax.Array:
  """decay_t = min(max_decay, (1 + t) / (10 + t)) for the update at step t (float32 [])."""
  step = jnp.asarray(step, jnp.float32)
  return jnp.minimum(jnp.float32(max_decay), (1.0 + step) / (10.0 + step))


def update(ema_params: Any, params: Any, step: jax.Array, max_decay: float) -> Any:
  """The EMA after the update at step t: decay_t * ema_params + (1 - decay_t) * params."""
  return optax.incremental_update(params, ema_params,
                                  step_size=1.0 - warmup_decay(step, max_decay))
