"""Head-pose controls applied to generated motion: how much the head moves, and whose pose it is.

  control = PoseControl(reference_pose, head_motion=0.5, driving_pose=None)
  shown = control(motion, first_frame)  # motion [c, M] = [z_pose (7), z_dyn] of frames
                                        # first_frame ... first_frame + c - 1

The shown z_pose of frame t is

  z_pose(t) = reference_pose + head_motion * (source(t) - reference_pose)

where reference_pose is the photo's own z_pose (the stage-1 motion encoder on the face crop) and
source(t) the generated z_pose, or with a driving video its z_pose at frame t (a driving video
shorter than the speech runs back and forth, so the pose never jumps). head_motion 0 keeps the
head still in the photo's pose, 1 shows the source pose as it is, above 1 exaggerates it. z_dyn
(the facial dynamics) is always the generated one.

The controls change what is shown, not what the motion model is conditioned on: each window of
the sampler continues from its own generated frames (scaling the history it conditions on would
compound the scale from window to window).
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np

from vasa_jax.data import motion_records

POSE_DIM = motion_records.POSE_DIM  # z_pose values at the start of a motion frame


def back_and_forth(frame_indices: np.ndarray, num_frames: int) -> np.ndarray:
  """Frame indices of a clip of `num_frames` frames played forwards, backwards, forwards, ...:
  0, 1, ..., n-1, n-2, ..., 1, 0, 1, ... (each index of a longer sequence maps into the clip)."""
  if num_frames == 1:
    return np.zeros_like(frame_indices)
  period = 2 * (num_frames - 1)
  phase = np.asarray(frame_indices) % period
  return np.where(phase < num_frames, phase, period - phase)


class PoseControl:
  """Applies `head_motion` and a driving pose to motion chunks (see the module docstring).

  reference_pose: [7] the photo's z_pose; head_motion: >= 0; driving_pose: [T_d, 7] or None.
  """

  def __init__(self, reference_pose: np.ndarray, head_motion: float = 1.0,
               driving_pose: Optional[np.ndarray] = None):
    if not math.isfinite(head_motion) or head_motion < 0:
      raise ValueError(f"head motion must be a number >= 0, got {head_motion}")
    self.reference_pose = np.asarray(reference_pose, np.float32).reshape(POSE_DIM)  # [7]
    self.head_motion = float(head_motion)
    self.driving_pose = None
    if driving_pose is not None:
      driving_pose = np.asarray(driving_pose, np.float32)
      if driving_pose.ndim != 2 or driving_pose.shape[1] != POSE_DIM or not len(driving_pose):
        raise ValueError(f"the driving pose must be [T > 0, {POSE_DIM}], got shape "
                         f"{driving_pose.shape}")
      self.driving_pose = driving_pose  # [T_d, 7]

  def __call__(self, motion: np.ndarray, first_frame: int) -> np.ndarray:
    """Motion [c, M] as shown: z_pose replaced as the controls ask, z_dyn unchanged."""
    motion = np.array(motion, np.float32)  # a copy
    source = motion[:, :POSE_DIM]  # [c, 7]
    if self.driving_pose is not None:
      frames = back_and_forth(first_frame + np.arange(len(motion)), len(self.driving_pose))
      source = self.driving_pose[frames]
    motion[:, :POSE_DIM] = self.reference_pose + self.head_motion * (source - self.reference_pose)
    return motion
