"""The emotion control of generation: a name or eight scores -> the motion model's emotion input.

VASA-1 conditions the motion generator on an emotion offset; here that is the clip's mean emotion
scores over `records.EMOTION_CLASSES` (HSEmotion's classes, what `data_prep.extract_motion`
stores). A user gives either a name (`NAMES`: happy, sad, angry, surprise, fear, disgust,
contempt, neutral, or a class name such as happiness) meaning all weight on that class, or eight
comma-separated non-negative scores in class order, scaled to sum to 1.
"""

from __future__ import annotations

import math
from typing import Sequence, Union

import numpy as np

from vasa_jax.data import records

# Control names -> emotion class.
NAMES = {"happy": "happiness", "sad": "sadness", "angry": "anger", "surprise": "surprise",
         "fear": "fear", "disgust": "disgust", "contempt": "contempt", "neutral": "neutral"}


def parse_emotion(value: Union[str, Sequence[float]]) -> np.ndarray:
  """A name, or 8 scores (a comma-separated string or a sequence) -> float32 [8] summing to 1.

  Raises:
    ValueError: an unknown name, another number of scores, or a negative, non-finite or all-zero
      score (the message names the value and what is accepted).
  """
  classes = records.EMOTION_CLASSES
  if isinstance(value, str):
    text = value.strip().lower()
    if text in NAMES or text in classes:
      scores = np.zeros(len(classes), np.float32)
      scores[classes.index(NAMES.get(text, text))] = 1.0
      return scores
    parts = [part.strip() for part in text.split(",")]
    try:
      numbers = [float(part) for part in parts]
    except ValueError:
      raise ValueError(
          f"emotion {value!r} is neither a name ({', '.join(NAMES)}) nor {len(classes)} "
          f"comma-separated scores ({', '.join(classes)})") from None
  else:
    numbers = [float(number) for number in value]
  if len(numbers) != len(classes):
    raise ValueError(f"emotion {value!r} has {len(numbers)} score(s); give {len(classes)} "
                     f"({', '.join(classes)}) or a name ({', '.join(NAMES)})")
  bad = [number for number in numbers if not (math.isfinite(number) and number >= 0)]
  if bad:
    raise ValueError(f"emotion {value!r} has score {bad[0]:g}; scores must be finite and >= 0")
  total = sum(numbers)
  if total <= 0:
    raise ValueError(f"emotion {value!r} has no positive score")
  return np.asarray(numbers, np.float32) / np.float32(total)
