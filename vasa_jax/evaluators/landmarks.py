"""LMD: mouth landmark distance between a generated clip and its reference video.

Per frame pair (frame t of both videos, both with a tracked face), the generated face's 68
landmarks are aligned onto the reference's by the least-squares similarity transform (rotation,
uniform scale, translation; Umeyama) fitted on the 48 landmarks outside the mouth (jaw, brows,
nose, eyes), so that head placement and size do not count; LMD is the mean Euclidean distance of
the 20 mouth landmarks (48-67) after that alignment, averaged over frame pairs, in pixels of the
reference video rescaled to a short side of `LMD_FRAME_SIZE` = 256 (the frame size most talking-
head papers measure on).
"""

from __future__ import annotations

import numpy as np

LMD_FRAME_SIZE = 256
MOUTH = np.arange(48, 68)
ALIGNMENT_POINTS = np.arange(0, 48)


def similarity_transform(source: np.ndarray, target: np.ndarray
                         ) -> tuple[float, np.ndarray, np.ndarray]:
  """(scale, rotation [2, 2], translation [2]) minimising ||scale R source + t - target||^2 over
  points [N, 2] (Umeyama 1991, reflections excluded)."""
  source, target = np.asarray(source, np.float64), np.asarray(target, np.float64)
  source_mean, target_mean = source.mean(0), target.mean(0)
  source_centred, target_centred = source - source_mean, target - target_mean
  covariance = target_centred.T @ source_centred / len(source)
  u, singular, vt = np.linalg.svd(covariance)
  sign = np.diag([1.0, np.sign(np.linalg.det(u) * np.linalg.det(vt))])
  rotation = u @ sign @ vt
  variance = (source_centred ** 2).sum() / len(source)
  scale = float((singular * np.diag(sign)).sum() / variance)
  return scale, rotation, target_mean - scale * rotation @ source_mean


def mouth_distance(generated: np.ndarray, reference: np.ndarray) -> float:
  """Mean mouth landmark distance of one frame pair [68, 2] after alignment (reference px)."""
  scale, rotation, translation = similarity_transform(generated[ALIGNMENT_POINTS],
                                                      reference[ALIGNMENT_POINTS])
  aligned = scale * generated[MOUTH] @ rotation.T + translation
  return float(np.linalg.norm(aligned - reference[MOUTH], axis=-1).mean())


def lmd(generated: np.ndarray, generated_found: np.ndarray, reference: np.ndarray,
        reference_found: np.ndarray, reference_short_side: int) -> float:
  """LMD over frames 0 .. min(T_gen, T_ref) - 1 where both have a face (NaN if none)."""
  count = min(len(generated), len(reference))
  both = np.asarray(generated_found[:count], bool) & np.asarray(reference_found[:count], bool)
  if not both.any():
    return float("nan")
  distances = [mouth_distance(generated[t], reference[t]) for t in np.flatnonzero(both)]
  return float(np.mean(distances)) * LMD_FRAME_SIZE / reference_short_side
