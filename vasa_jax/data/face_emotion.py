"""Per-frame emotion scores of face crops: HSEmotion's classifier (`vasa_jax.models.emotion`) run
by `data_prep.prepare --emotion_weights=FILE` on every crop it writes."""

from __future__ import annotations

import jax
import numpy as np

from vasa_jax.models import emotion
from vasa_jax.models import pretrained

# Crops classified per call (a fixed batch: one compiled program per crop size).
BATCH_SIZE = 16


class EmotionScorer:
  """scores(crops uint8 [T, H, W, 3] RGB) -> float32 [T, 8] softmax over EMOTION_CLASSES."""

  def __init__(self, weights_path: str, batch_size: int = BATCH_SIZE):
    self.model = emotion.EmotionNet()
    self.variables = jax.device_put(pretrained.load_emotion(weights_path))
    self.batch_size = batch_size
    self._scores = jax.jit(lambda variables, crops: emotion.scores(self.model, variables, crops))

  def __call__(self, crops: np.ndarray) -> np.ndarray:
    crops = np.asarray(crops)
    if crops.ndim != 4 or crops.shape[-1] != 3:
      raise ValueError(f"face crops must be [T, H, W, 3], got shape {crops.shape}")
    outputs = []
    for start in range(0, len(crops), self.batch_size):
      chunk = crops[start:start + self.batch_size].astype(np.float32) / 255.0  # [b, H, W, 3]
      padded = np.zeros((self.batch_size,) + chunk.shape[1:], np.float32)
      padded[:len(chunk)] = chunk
      outputs.append(np.asarray(self._scores(self.variables, padded))[:len(chunk)])
    if not outputs:
      return np.zeros((0, emotion.NUM_EMOTIONS), np.float32)
    return np.concatenate(outputs).astype(np.float32)  # [T, 8]
