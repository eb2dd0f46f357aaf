"""Runs a jitted network over many inputs in fixed-size batches (one compiled shape)."""

from __future__ import annotations

from typing import Callable

import jax.numpy as jnp
import numpy as np


def batched(function: Callable[[jnp.ndarray], jnp.ndarray], inputs: np.ndarray,
            batch_size: int) -> np.ndarray:
  """function(batch) for consecutive batches of `inputs` [N, ...], concatenated to [N, ...].

  The last batch is padded with zeros to `batch_size`, so a jitted `function` compiles once; the
  padded rows' outputs are dropped.
  """
  inputs = np.asarray(inputs)
  if not len(inputs):
    raise ValueError("no inputs")
  outputs = []
  for start in range(0, len(inputs), batch_size):
    batch = inputs[start:start + batch_size]
    filled = len(batch)
    if filled < batch_size:
      padding = np.zeros((batch_size - filled,) + batch.shape[1:], batch.dtype)
      batch = np.concatenate([batch, padding])
    outputs.append(np.asarray(function(jnp.asarray(batch)))[:filled])
  return np.concatenate(outputs)
