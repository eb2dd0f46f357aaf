"""Classifier-free guidance with separate audio and gaze scales (VASA-1 section 3.2):

  H_hat = (1 + lambda_A + lambda_g) H(X^t, t, C) - lambda_A H(X^t, t, C|A=0)
          - lambda_g H(X^t, t, C|g=0).

The three predictions come from ONE network call on a 3B batch: [conditional; audio dropped;
gaze dropped]. Scales may be traced arrays, so a guided `denoise_fn` works inside `jit`/`lax.scan`.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

import jax
import jax.numpy as jnp

from vasa_jax.diffusion.conditioning import DROP_KEYS, mask_or_default
from vasa_jax.diffusion.sampling import DenoiseFn

# VASA-1's default guidance scales.
DEFAULT_LAMBDA_AUDIO = 0.5
DEFAULT_LAMBDA_GAZE = 1.0


def _tile3(tree: Any) -> Any:
  """Every array of `tree` repeated three times along its batch axis: [B, ...] -> [3B, ...]."""
  return jax.tree.map(lambda leaf: jnp.concatenate([leaf, leaf, leaf], axis=0), tree)


def guidance_drops(drops: Optional[Mapping[str, jax.Array]], batch_size: int) -> dict[str, Any]:
  """The masks of the 3B batch: `drops` (missing keys: nothing dropped) on all three copies, plus
  drop_audio on the second copy and drop_gaze on the third. Other keys of `drops` are tiled."""
  stacked = _tile3({key: value for key, value in (drops or {}).items() if key not in DROP_KEYS})
  always = jnp.ones((batch_size,), bool)
  for key in DROP_KEYS:
    base = mask_or_default(drops, key, (batch_size,))
    second = always if key == "drop_audio" else base
    third = always if key == "drop_gaze" else base
    stacked[key] = jnp.concatenate([base, second, third], axis=0)  # [3B]
  return stacked


def guided_x0(denoise_fn: DenoiseFn, x_t: jax.Array, t: jax.Array, conditions: Any,
              lambda_audio: float | jax.Array, lambda_gaze: float | jax.Array,
              drops: Optional[Mapping[str, jax.Array]] = None) -> jax.Array:
  """The guided X^0 prediction [B, ...] from one `denoise_fn` call on the 3B batch.

  x_t [B, ...]; t [B] int; conditions: a pytree of [B, ...] arrays; drops: the base masks
  (e.g. drop_previous for a clip's first window, audio_valid for a short last window).
  """
  batch_size = x_t.shape[0]
  predictions = denoise_fn(_tile3(x_t), _tile3(t), _tile3(conditions),
                           guidance_drops(drops, batch_size))  # [3B, ...]
  conditional, without_audio, without_gaze = jnp.split(predictions, 3, axis=0)
  return ((1.0 + lambda_audio + lambda_gaze) * conditional - lambda_audio * without_audio
          - lambda_gaze * without_gaze)


def with_guidance(denoise_fn: DenoiseFn, lambda_audio: float | jax.Array = DEFAULT_LAMBDA_AUDIO,
                  lambda_gaze: float | jax.Array = DEFAULT_LAMBDA_GAZE) -> DenoiseFn:
  """`denoise_fn` wrapped to return the guided X^0; same signature (for `sampling.sample`)."""
  def guided_denoise_fn(x_t, t, conditions, drops):
    return guided_x0(denoise_fn, x_t, t, conditions, lambda_audio, lambda_gaze, drops)
  return guided_denoise_fn
