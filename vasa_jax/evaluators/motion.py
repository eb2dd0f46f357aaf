"""Head motion and control accuracy of a generated clip, re-measured by the tracker.

  delta_pose (Delta P, VASA-1): the mean absolute frame-to-frame change of the head angles (yaw,
    pitch, roll, degrees), averaged over the three angles and over the pairs of consecutive frames
    that both show a face; the evaluator averages it over clips.
  gaze_error (E_g): the distance, in degrees of (theta, phi), between the requested gaze control
    and the clip's main gaze direction measured as stage-2 data defines the control
    (`extract_motion.main_gaze_direction` of the per-frame gaze of the frames with a face).
  distance_error (E_d): |requested distance - the median per-frame distance proxy| of the frames
    with a face (stage-2 data's `distance_main`; 1.0 = the reference face size).
"""

from __future__ import annotations

import numpy as np

# Fewest frames with a face for the gaze and distance measures (a clip-level statistic).
MIN_FACE_FRAMES = 5


def delta_pose(head_pose: np.ndarray, found: np.ndarray) -> float:
  """Mean |angle_t - angle_{t-1}| in degrees over angles and consecutive found frames (NaN if no
  such pair)."""
  head_pose, found = np.asarray(head_pose, np.float64), np.asarray(found, bool)
  pairs = found[1:] & found[:-1]
  if not pairs.any():
    return float("nan")
  return float(np.abs(np.diff(head_pose, axis=0))[pairs].mean())


def gaze_error(gaze: np.ndarray, found: np.ndarray, requested: np.ndarray) -> float:
  """||main gaze direction - requested (theta, phi)|| in degrees (NaN with too few faces)."""
  # Imported here: extract_motion pulls in the stage-1 models and the audio featurisers.
  from vasa_jax.data import extract_motion  # pylint: disable=g-import-not-at-top

  found = np.asarray(found, bool)
  if found.sum() < MIN_FACE_FRAMES:
    return float("nan")
  main = extract_motion.main_gaze_direction(np.asarray(gaze)[found]).astype(np.float64)
  return float(np.linalg.norm(main - np.asarray(requested, np.float64)))


def distance_error(distance: np.ndarray, found: np.ndarray, requested: float) -> float:
  """|median distance proxy - requested| (NaN with too few faces)."""
  found = np.asarray(found, bool)
  if found.sum() < MIN_FACE_FRAMES:
    return float("nan")
  return float(abs(np.median(np.asarray(distance, np.float64)[found]) - float(requested)))
