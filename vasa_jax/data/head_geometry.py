"""Head geometry from 68 facial landmarks: head pose, face size, crop boxes, distance and gaze.

Pure numpy, no images (the image side lives in `vasa_jax.data.face_tracker`).

Frames. Landmarks arrive in image pixels (x right, y down). The fits here work in the "y-up image
frame" (x right, y up), where a 3D model frame with x right, y up, z towards the camera projects by
dropping z (a proper rotation, so the usual Euler formulas apply). The 3D mean face is given in that
model frame, looking straight at the camera, in millimetres.

Angles follow `vasa_jax.data.records`: yaw > 0 turns the face to the image's left, pitch > 0 looks up,
roll > 0 tilts the head clockwise in the image. The head rotation is
`R = Rz(-roll) @ Ry(-yaw) @ Rx(-pitch)` in the y-up frame (yaw about the camera's vertical axis
after nodding about the head's ear-to-ear axis; roll last, about the viewing axis).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from vasa_jax.data import records

# ----------------------------------------------------------------------------------------------
# Generic 3D mean face (millimetres; x towards the image's right, i.e. the subject's left, y up,
# z towards the camera; origin between the inner eye corners).
#
# Anatomical points (eyes, nose, mouth, brows) take averaged adult values from Farkas,
# "Anthropometry of the Head and Face" (1994): inner eye corners 33 mm apart (intercanthal
# width), outer corners 90 mm apart (biocular width) and ~10 mm behind the inner ones;
# nasion-subnasale 52 mm; nose tip 16 mm in front of the subnasale and 29 mm in front of the inner
# eye corners; mouth 50 mm wide, 22 mm below the subnasale; eyebrows 20-28 mm above the eye line,
# their outer ends on the orbital rim ~18 mm behind the inner eye corners.
# dlib's jaw landmarks are not anatomical points but an annotation convention: 17 points spread
# evenly along the visible face contour, from just above the eye line at the ears to the chin. Their
# x and y follow dlib's mean frontal layout (the template of OpenFace's dlib alignment, in
# millimetres at this model's inter-ocular distance): with anthropometric positions instead (chin at
# nasion-menton 118 mm, contour ends at the tragion level) a frontal dlib face reads ~5 degrees of
# pitch. Their depth is where the frontal silhouette passes: on the side of the face, well behind
# the eyes, deepest at the ears.
#
# Only points that are stable under expression and well defined take part in the pose fit; each
# has a weight (jaw contour and chin slide with yaw and with the opening mouth: low weight).
# Points on the subject's left (x > 0) are listed; their mirror images are added below.
# ----------------------------------------------------------------------------------------------
_LEFT_AND_MIDLINE_POINTS = {
    # index: (x, y, z, weight)
    # Face contour (dlib 9..16) and chin (8).
    8: (0.0, -116.3, -8.0, 0.3),
    10: (33.2, -102.4, -20.0, 0.25),
    12: (58.4, -69.8, -42.0, 0.25),
    14: (69.5, -31.2, -52.0, 0.25),
    16: (71.7, 7.2, -58.0, 0.25),
    # Left eyebrow (dlib 22 inner end, 24 middle, 26 outer end).
    22: (13.0, 22.0, 8.0, 0.5),
    24: (33.0, 28.0, 0.0, 0.5),
    26: (53.0, 20.0, -18.0, 0.5),
    # Nose: bridge (27-30, 30 is the tip), nostrils (31-35, 33 the subnasale).
    27: (0.0, 4.0, 12.0, 1.0),
    28: (0.0, -8.0, 16.0, 1.0),
    29: (0.0, -19.0, 21.0, 1.0),
    30: (0.0, -33.0, 29.0, 1.0),
    33: (0.0, -42.0, 13.0, 1.0),
    34: (7.0, -41.0, 11.0, 0.7),
    35: (14.0, -39.0, 7.0, 1.0),
    # Left eye: inner corner (42), outer corner (45).
    42: (16.5, 0.0, 0.0, 1.0),
    45: (45.0, 2.0, -10.0, 1.0),
    # Mouth: left corner (54), upper lip top (51).
    51: (0.0, -55.0, 12.0, 0.5),
    54: (25.0, -64.0, -2.0, 0.5),
}

# dlib 68-point mirror pairs (subject's left <-> right) for the indices above.
_MIRROR = {10: 6, 12: 4, 14: 2, 16: 0, 22: 21, 24: 19, 26: 17, 34: 32, 35: 31, 42: 39, 45: 36,
           54: 48}


def _build_mean_face() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  points = dict(_LEFT_AND_MIDLINE_POINTS)
  for left, right in _MIRROR.items():
    x, y, z, weight = points[left]
    points[right] = (-x, y, z, weight)
  indices = np.array(sorted(points))
  values = np.array([points[i] for i in indices], np.float64)
  return indices, values[:, :3], values[:, 3]


# Landmark indices (dlib 68 layout) fitted by the pose solver, their 3D positions [N, 3] in mm and
# their least-squares weights [N].
MODEL_INDICES, MODEL_POINTS_MM, MODEL_WEIGHTS = _build_mean_face()

JAW = np.arange(0, 17)  # the jaw line, ear to ear through the chin
NOSE_BASE = 33  # the bottom of the nose between the nostrils
RIGHT_EYE = np.arange(36, 42)  # the subject's right eye (image left when frontal)
LEFT_EYE = np.arange(42, 48)
MOUTH_INDICES = np.arange(48, 68)  # outer and inner lip contours
MOUTH_CORNERS = np.array([48, 54])  # outer lip corners
# Inner-lip landmark pairs facing each other across the mouth opening (upper, lower).
INNER_LIP_PAIRS = np.array([[61, 67], [62, 66], [63, 65]])
# Distance between the two eye centres (midpoints of each eye's corners) of the model.
MODEL_INTEROCULAR_MM = _LEFT_AND_MIDLINE_POINTS[42][0] + _LEFT_AND_MIDLINE_POINTS[45][0]
# Face size of the model by the FFHQ alignment measure max(2 x eye distance, 1.8 x eye-to-mouth
# distance), so that a crop of side 2 x face size frames a frontal face as FFHQ does. Multiplied
# by the fitted scale it gives a face size that does not shrink when the head turns.
MODEL_FACE_SIZE_MM = max(
    2.0 * MODEL_INTEROCULAR_MM,
    1.8 * (0.5 * (_LEFT_AND_MIDLINE_POINTS[42][1] + _LEFT_AND_MIDLINE_POINTS[45][1])
           - _LEFT_AND_MIDLINE_POINTS[54][1]))
# The crop is centred on the projection of this model point: a little below the eyes (FFHQ centres
# at eye centre + 0.1 x eye-to-mouth) and 25 mm inside the head, so that a turned head stays
# centred instead of its face surface.
CROP_CENTER_MM = np.array([0.0, -6.0, -25.0])

# Eyes, for gaze. The cornea apex lies ~4 mm in front of the inner eye corner and ~10 mm in front of
# the outer one (exophthalmometry: ~16 mm in front of the lateral orbital rim, which lies ~6 mm
# behind the outer corner), i.e. ~7 mm in front of the corners' midpoint; with a 12 mm eyeball
# radius the eyeball centre is 5 mm behind that midpoint. The visible iris/pupil (iris plane
# ~3.5 mm inside the cornea, brought forward and magnified by corneal refraction) turns about that
# centre on a ~10 mm radius. These set the gain from the iris's image displacement to the eye's
# rotation, and the iris's parallax against the eye corners when the head turns.
EYEBALL_DEPTH_BEHIND_CORNERS_MM = 5.0
PUPIL_ROTATION_RADIUS_MM = 10.0
# Iris radius (visible iris diameter ~11.7 mm): the disc within which the iris centre is refined.
IRIS_RADIUS_MM = 5.9


@dataclasses.dataclass(frozen=True)
class HeadPose:
  """Weak-perspective head pose: `image_yup = scale * (rotation @ X)[:2] + translation`.

  Attributes:
    rotation: [3, 3] model frame -> camera frame, y-up image convention.
    scale: pixels per millimetre of the model.
    translation: [2] image position of the model origin, y-up frame (x, -y of image pixels).
    rms_error: weighted root-mean-square reprojection error in pixels.
  """
  rotation: np.ndarray
  scale: float
  translation: np.ndarray
  rms_error: float

  def angles(self) -> np.ndarray:
    """[yaw, pitch, roll] in degrees (records.py conventions)."""
    return rotation_to_angles(self.rotation)

  def project(self, points_mm: np.ndarray) -> np.ndarray:
    """Model points [N, 3] (mm) -> image pixels [N, 2] (x right, y down)."""
    projected = self.scale * (points_mm @ self.rotation.T)[:, :2] + self.translation
    return projected * np.array([1.0, -1.0])

  def displacement(self, vector_mm: np.ndarray) -> np.ndarray:
    """Image displacement [2] (pixels, y down) of a model-frame vector [3] (mm)."""
    return self.scale * (self.rotation @ vector_mm)[:2] * np.array([1.0, -1.0])


def angles_to_rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
  """Rotation [3, 3] (y-up frame) for angles in degrees: Rz(-roll) @ Ry(-yaw) @ Rx(-pitch)."""
  a, b, c = np.deg2rad([-pitch, -yaw, -roll])
  rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
  ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
  rz = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
  return rz @ ry @ rx


def rotation_to_angles(rotation: np.ndarray) -> np.ndarray:
  """Inverse of `angles_to_rotation`: [yaw, pitch, roll] in degrees."""
  b = np.arcsin(np.clip(-rotation[2, 0], -1.0, 1.0))
  a = np.arctan2(rotation[2, 1], rotation[2, 2])
  c = np.arctan2(rotation[1, 0], rotation[0, 0])
  return -np.rad2deg(np.array([b, a, c]))


def _skew(v: np.ndarray) -> np.ndarray:
  """[N, 3] -> [N, 3, 3] cross-product matrices."""
  zero = np.zeros(len(v))
  return np.stack([
      np.stack([zero, -v[:, 2], v[:, 1]], -1),
      np.stack([v[:, 2], zero, -v[:, 0]], -1),
      np.stack([-v[:, 1], v[:, 0], zero], -1)], 1)


def _rodrigues(omega: np.ndarray) -> np.ndarray:
  angle = np.linalg.norm(omega)
  if angle < 1e-12:
    return np.eye(3)
  k = _skew((omega / angle)[None])[0]
  return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k


def fit_head_pose(landmarks: np.ndarray, refine_steps: int = 4) -> HeadPose:
  """Fits the 3D mean face to 68 image landmarks by weighted weak-perspective least squares.

  A linear least-squares affine camera is projected onto the nearest scaled rotation (SVD), then
  `refine_steps` Gauss-Newton steps on (rotation, log scale, translation) minimise the weighted
  reprojection error.

  Args:
    landmarks: [68, 2] image pixels (x right, y down).
    refine_steps: Gauss-Newton iterations after the closed-form start.

  Returns:
    The fitted HeadPose.
  """
  points_2d = np.asarray(landmarks, np.float64)[MODEL_INDICES] * np.array([1.0, -1.0])
  model, weights = MODEL_POINTS_MM, MODEL_WEIGHTS
  w = weights / weights.sum()
  model_mean = w @ model
  image_mean = w @ points_2d
  model_centred = model - model_mean
  image_centred = points_2d - image_mean
  affine = np.linalg.solve(
      model_centred.T @ (w[:, None] * model_centred),
      model_centred.T @ (w[:, None] * image_centred)).T  # [2, 3]
  u, singular, vt = np.linalg.svd(affine, full_matrices=False)
  rows = u @ vt
  rotation = np.stack([rows[0], rows[1], np.cross(rows[0], rows[1])])
  scale = float(singular.mean())
  translation = image_mean - scale * (rotation @ model_mean)[:2]

  sqrt_w = np.sqrt(w)[:, None]
  for _ in range(refine_steps):
    rotated = model @ rotation.T  # [N, 3]
    residual = (scale * rotated[:, :2] + translation - points_2d) * sqrt_w  # [N, 2]
    # d(projection)/d(omega) for rotation <- exp([omega]) @ rotation: -scale * [rotated]_x[:2].
    jac_rot = -scale * _skew(rotated)[:, :2, :]  # [N, 2, 3]
    jac_scale = scale * rotated[:, :2, None]  # d/d(log scale)
    jac_trans = np.broadcast_to(np.eye(2), (len(model), 2, 2))
    jacobian = np.concatenate([jac_rot, jac_scale, jac_trans], -1) * sqrt_w[:, :, None]
    step = np.linalg.lstsq(jacobian.reshape(-1, 6), -residual.reshape(-1), rcond=None)[0]
    rotation = _rodrigues(step[:3]) @ rotation
    scale *= float(np.exp(step[3]))
    translation = translation + step[4:]

  residual = scale * (model @ rotation.T)[:, :2] + translation - points_2d
  rms = float(np.sqrt(w @ (residual ** 2).sum(-1)))
  return HeadPose(rotation=rotation, scale=scale, translation=translation, rms_error=rms)


def face_size(pose: HeadPose) -> float:
  """Rotation-invariant face size in pixels (FFHQ measure of the frontal face)."""
  return pose.scale * MODEL_FACE_SIZE_MM


def crop_box(pose: HeadPose, crop_scale: float) -> np.ndarray:
  """[x_center, y_center, side] of the square crop in image pixels."""
  center = pose.project(CROP_CENTER_MM[None])[0]
  return np.array([center[0], center[1], crop_scale * face_size(pose)])


def interocular_distance(pose: HeadPose, landmarks: np.ndarray) -> float:
  """The face's inter-ocular distance in pixels, as if it faced the camera.

  The distance between the eye centres (each the midpoint of its two corners) measured in the image
  is divided by how much the fitted rotation foreshortens the model's inter-ocular vector, so that
  turning the head does not read as moving away.
  """
  right_eye = 0.5 * (landmarks[RIGHT_EYE[0]] + landmarks[RIGHT_EYE[3]])
  left_eye = 0.5 * (landmarks[LEFT_EYE[0]] + landmarks[LEFT_EYE[3]])
  foreshortening = np.linalg.norm(pose.rotation[:2, 0])  # the model's eye-to-eye axis is x
  return float(np.linalg.norm(left_eye - right_eye) / max(foreshortening, 0.3))


def distance_proxy(interocular_pixels: np.ndarray | float,
                   frame_short_side: float) -> np.ndarray | float:
  """Head-to-camera distance proxy (records.py): REFERENCE_INTEROCULAR / inter-ocular fraction.

  Args:
    interocular_pixels: frontal-equivalent inter-ocular distance(s), see `interocular_distance`.
    frame_short_side: short side of the source frame in pixels.
  """
  return records.REFERENCE_INTEROCULAR * frame_short_side / np.asarray(interocular_pixels)


def eye_aspect_ratio(landmarks: np.ndarray) -> np.ndarray:
  """Mean eye aspect ratio of both eyes (lid opening / eye width; ~0.3 open, < 0.15 closed).

  landmarks [..., 68, 2] -> [...] (a 0-d array for one frame's [68, 2]).
  """
  ratios = []
  for eye in (RIGHT_EYE, LEFT_EYE):
    p = np.moveaxis(np.asarray(landmarks)[..., eye, :], -2, 0)  # [6, ..., 2]
    opening = np.linalg.norm(p[1] - p[5], axis=-1) + np.linalg.norm(p[2] - p[4], axis=-1)
    ratios.append(opening / (2.0 * np.linalg.norm(p[0] - p[3], axis=-1) + 1e-9))
  return np.mean(ratios, axis=0)


def mouth_aspect_ratio(landmarks: np.ndarray) -> float:
  """Mouth opening / mouth width: the mean inner-lip gap over the corner-to-corner distance.

  0 for closed lips; ~0.3 wide open. Invariant to the face's scale, position and a horizontal flip.
  """
  upper, lower = landmarks[INNER_LIP_PAIRS[:, 0]], landmarks[INNER_LIP_PAIRS[:, 1]]
  gap = np.linalg.norm(upper - lower, axis=-1)
  width = np.linalg.norm(landmarks[MOUTH_CORNERS[0]] - landmarks[MOUTH_CORNERS[1]])
  return float(np.mean(gap) / (width + 1e-9))


def gaze_vector_from_pupils(pose: HeadPose, landmarks: np.ndarray,
                            pupils: np.ndarray) -> np.ndarray:
  """Camera-space unit gaze vector [3] (y-up frame, z towards the camera) from the pupil centres.

  Each eyeball centre is placed EYEBALL_DEPTH_BEHIND_CORNERS_MM behind the midpoint of its
  observed corners (rotated with the head); the pupil's image offset from that projected centre,
  divided by scale x PUPIL_ROTATION_RADIUS_MM, gives the x and y components of the unit gaze vector
  in camera space. Head rotation is thereby accounted for in 3D (a turned head with the eyes
  straight ahead reads as theta = yaw, pitch likewise) rather than by adding an eye-in-head angle
  to the head pose, which would count the pupils' parallax against the eye corners twice.

  Args:
    pose: the frame's head pose.
    landmarks: [68, 2] image pixels.
    pupils: [2, 2] pupil centres (subject's right eye, left eye) in image pixels.

  Returns:
    The mean of both eyes' gaze directions, normalised.
  """
  back = pose.displacement(np.array([0.0, 0.0, -EYEBALL_DEPTH_BEHIND_CORNERS_MM]))
  directions = []
  for eye, pupil in zip((RIGHT_EYE, LEFT_EYE), pupils):
    corners_mid = 0.5 * (landmarks[eye[0]] + landmarks[eye[3]])
    offset = (pupil - (corners_mid + back)) / (pose.scale * PUPIL_ROTATION_RADIUS_MM)
    xy = np.array([offset[0], -offset[1]])
    norm = np.linalg.norm(xy)
    if norm > 0.98:  # beyond the eyeball's silhouette: a mislocated pupil, keep it on the ball
      xy *= 0.98 / norm
    directions.append(np.array([xy[0], xy[1], np.sqrt(1.0 - xy @ xy)]))
  direction = np.mean(directions, 0)
  return direction / np.linalg.norm(direction)


def gaze_angles(direction: np.ndarray) -> np.ndarray:
  """Unit gaze vectors [..., 3] (y-up camera frame) -> [..., 2] (theta, phi) in degrees.

  theta > 0 looks towards the image's left (the sign of yaw), phi > 0 looks up; a head at
  (yaw, pitch) looking straight ahead has gaze (yaw, pitch).
  """
  theta = np.arctan2(-direction[..., 0], direction[..., 2])
  phi = np.arcsin(np.clip(direction[..., 1], -1.0, 1.0))
  return np.rad2deg(np.stack([theta, phi], -1))
