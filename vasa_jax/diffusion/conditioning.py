"""Training-time condition dropout for classifier-free guidance (VASA-1 section 3.2).

The masks are a dict (`drops`) that `MotionDiT` reads; a missing key means "nothing dropped":
  drop_audio, drop_gaze, drop_distance, drop_emotion  [B] bool: the condition is replaced by its
      learned null embedding (VASA-1 drops each with probability 0.1).
  drop_previous  [B] bool: the previous window's motion X_pre and audio A_pre are dropped together
      (probability 0.5), as for the first window of a clip at inference.
  audio_valid  [B, W] bool: False on trailing frames whose audio is missing (a prefix of the window
      is valid); trained by random truncation so that windows shorter than W work at inference.
"""

from __future__ import annotations

from typing import Mapping, Optional

import jax
import jax.numpy as jnp

# The per-example [B] masks, in the order `sample_condition_dropout` draws them.
DROP_KEYS = ("drop_audio", "drop_gaze", "drop_distance", "drop_emotion", "drop_previous")
# The per-frame [B, W] mask of audio frames present.
AUDIO_VALID_KEY = "audio_valid"

# Probability of each mask being set; "truncate_audio" is the probability that a window loses a
# random number of trailing audio frames. VASA-1: 0.1 per condition, 0.5 for X_pre and A_pre
# together; it does not give the truncation rate (0.1 is this project's choice).
DEFAULT_PROBABILITIES = {
    "drop_audio": 0.1,
    "drop_gaze": 0.1,
    "drop_distance": 0.1,
    "drop_emotion": 0.1,
    "drop_previous": 0.5,
    "truncate_audio": 0.1,
}


def sample_condition_dropout(rng: jax.Array, batch_size: int, window: int,
                             probabilities: Optional[Mapping[str, float]] = None,
                             max_audio_truncation: Optional[int] = None) -> dict[str, jax.Array]:
  """Random condition-dropout masks for a batch (keys: `DROP_KEYS` and "audio_valid").

  probabilities: overrides of `DEFAULT_PROBABILITIES` (same keys; missing keys keep the default).
  max_audio_truncation: a truncated window loses 1..max trailing audio frames, uniformly; capped at
    window - 1 (at least one audio frame stays); None: window - 1.
  """
  unknown = set(probabilities or {}) - set(DEFAULT_PROBABILITIES)
  if unknown:
    raise ValueError(f"unknown dropout probabilities {sorted(unknown)}; expected keys of "
                     f"{sorted(DEFAULT_PROBABILITIES)}")
  probabilities = {**DEFAULT_PROBABILITIES, **(probabilities or {})}
  max_truncation = window - 1 if max_audio_truncation is None else min(max_audio_truncation,
                                                                       window - 1)
  drop_rng, truncate_rng, length_rng = jax.random.split(rng, 3)
  drop_rngs = jax.random.split(drop_rng, len(DROP_KEYS))
  drops = {key: jax.random.bernoulli(key_rng, probabilities[key], (batch_size,))
           for key, key_rng in zip(DROP_KEYS, drop_rngs)}
  truncate_probability = probabilities["truncate_audio"] if max_truncation >= 1 else 0.0
  truncated = jax.random.bernoulli(truncate_rng, truncate_probability, (batch_size,))  # [B]
  removed = jax.random.randint(length_rng, (batch_size,), 1, max(max_truncation, 1) + 1)  # [B]
  valid_length = window - jnp.where(truncated, removed, 0)  # [B], in [1, window]
  drops[AUDIO_VALID_KEY] = jnp.arange(window)[None, :] < valid_length[:, None]  # [B, W]
  return drops


def mask_or_default(drops: Optional[Mapping[str, jax.Array]], key: str,
                    shape: tuple[int, ...]) -> jax.Array:
  """`drops[key]` as a bool array, or the "not dropped" default of `shape` if absent.

  The default is all False for the drop_* masks and all True for "audio_valid".
  """
  if drops is not None and key in drops:
    return jnp.asarray(drops[key], bool)
  return jnp.full(shape, key == AUDIO_VALID_KEY)
