"""One tracker pass per clip, shared by every tracker-based metric of the evaluator.

Generated frames are measured exactly as data preparation measures real video: frames smaller
than `lip_sync.MEASURE_SIZE` are upscaled first (`lip_sync.upscale_for_tracking`), then
`FaceTracker.track_clip` (without the size and blur checks of data preparation) gives per frame
the 68 landmarks, head pose, gaze and distance proxy. Landmarks come back in the pixels of the
frames that were passed in.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np

from vasa_jax.data import face_tracker
from vasa_jax.evaluators import lip_sync

# Side of the aligned crops the tracker resamples (unused here; small keeps the pass cheap).
TRACKER_CROP_SIZE = 64


def make_tracker() -> face_tracker.FaceTracker:
  """The tracker the evaluator uses: data preparation's settings, small crops."""
  return face_tracker.FaceTracker(face_tracker.TrackerConfig(resolution=TRACKER_CROP_SIZE))


@dataclasses.dataclass(frozen=True)
class TrackedClip:
  """The tracker's per-frame measurements of one clip.

  Attributes:
    skip_reason: None, or why the clip could not be measured ("no_face", "multiple_faces").
    found: bool [T], a face was found in the frame (other frames hold interpolated values).
    landmarks: float [T, 68, 2] in pixels of the frames given to `track`.
    head_pose: float [T, 3] yaw, pitch, roll in degrees.
    gaze: float [T, 2] theta, phi in degrees.
    distance: float [T] the distance proxy (`head_geometry.distance_proxy`).
  """
  skip_reason: Optional[str]
  found: Optional[np.ndarray] = None
  landmarks: Optional[np.ndarray] = None
  head_pose: Optional[np.ndarray] = None
  gaze: Optional[np.ndarray] = None
  distance: Optional[np.ndarray] = None

  def mouth(self) -> lip_sync.MouthTrack:
    """The mouth opening per frame, as `lip_sync.track_mouth` measures it."""
    return lip_sync.mouth_track(self.found, self.landmarks)


def track(frames: np.ndarray, fps: float,
          tracker: Optional[face_tracker.FaceTracker] = None) -> TrackedClip:
  """Tracks the main face of uint8 RGB frames [T, H, W, 3] (one photo: T = 1)."""
  tracker = tracker or make_tracker()
  upscaled, scale = lip_sync.upscale_for_tracking(frames)
  result = tracker.track_clip(upscaled, fps, check_quality=False)
  if result.skip_reason is not None:
    return TrackedClip(skip_reason=result.skip_reason)
  annotations = result.annotations
  # Invert `face_image.source_to_crop` with the crop boxes the landmarks were mapped by.
  box = annotations["crop_box"].astype(np.float64)  # [T, 3] centre x, centre y, side
  origin = box[:, None, :2] - box[:, None, 2:] / 2
  crop_size = tracker.config.resolution
  landmarks = ((annotations["landmarks"].astype(np.float64) + 0.5) * (box[:, None, 2:] / crop_size)
               + origin) / scale
  return TrackedClip(skip_reason=None, found=annotations["face_found"].astype(bool),
                     landmarks=landmarks, head_pose=annotations["head_pose"].astype(np.float64),
                     gaze=annotations["gaze"].astype(np.float64),
                     distance=annotations["distance"].astype(np.float64))
