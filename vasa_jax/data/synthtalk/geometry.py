"""Geometry of SynthTalk's heads: factors, identities, the 3D head model, poses, projection.

Pure numpy, vectorised over the frames of a sequence: the factors of a frame (`FACTOR_NAMES`)
and their vector / matrix forms, `Identity` and `sample_identity`, head rotations and gaze
directions, an identity's 3D head at rest (`head_model`: landmarks and shading ellipsoids), the
landmarks animated (jaw, lids) and posed, and their projection into the frames (`Views`,
`project_landmarks`). `vasa_jax.data.synthtalk.render` draws the frames from these and re-exports
the public names.

Conventions (those of `vasa_jax.data.records`):
  * Camera frame: x to the image's right, y down, z away from the camera. Head model frame: the
    same axes for a frontal face; units are millimetres; the origin is the centroid of the 68
    frontal landmarks.
  * Rotation `R = Rz(roll) @ Ry(yaw) @ Rx(-pitch)` maps head points to camera points (see
    `rotation_matrix`): yaw > 0 turns the face to the image's left (the subject's right),
    pitch > 0 looks up, roll > 0 tilts the head clockwise in the image. It is the rotation that
    `vasa_jax.data.head_geometry.angles_to_rotation` writes in its y-up frame.
  * Projection: scaled orthographic. The scale makes the 3D inter-ocular distance (between the
    eye centres, each the midpoint of its two corners) `records.REFERENCE_INTEROCULAR * resolution
    / distance` pixels, whatever the pose. The head origin lands at pixel
    `(resolution / 2 + tx * resolution, resolution / 2 + ty * resolution)`.
  * Pixel coordinates: pixel (row i, column j) has its centre at (x, y) = (j, i), as in dlib's
    landmark output.
  * Landmarks follow dlib's semantics: the jaw points 0-16 mark the visible face contour, so as
    the head turns they slide on the cheek to the silhouette (`_CONTOUR_DEPTH`) instead of being
    fixed points of the head; all other points are fixed on the (animated) face.
  * Gaze: `eye_theta`, `eye_phi` (degrees) turn both eyes in the head frame, with the signs of
    yaw and pitch (theta > 0 towards the image's left for a frontal head, phi > 0 up). The
    camera-space gaze of the annotations (`camera_gaze`) is the exact composition of the head
    rotation and that eye direction; for small angles it is about (yaw + eye_theta,
    pitch + eye_phi).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Mapping, Sequence, Union

import numpy as np

from vasa_jax.data import records

FACTOR_NAMES = (
    "yaw",         # degrees, > 0: the face turns to the image's left
    "pitch",       # degrees, > 0: looks up
    "roll",        # degrees, > 0: tilts clockwise in the image
    "distance",    # records' distance: inter-ocular = REFERENCE_INTEROCULAR * R / distance pixels
    "tx",          # horizontal image-plane offset of the head origin, fraction of the resolution
    "ty",          # vertical image-plane offset of the head origin (down > 0), same unit
    "mouth_open",  # 0 closed .. 1 wide open (jaw rotation, ~20 mm between the lips)
    "blink",       # 0 open .. 1 closed
    "eye_theta",   # degrees, eye direction in the head, horizontal (sign of yaw)
    "eye_phi",     # degrees, eye direction in the head, vertical (up > 0)
    "smile",       # 0 none .. 1 full: mouth corners up and out (an expression, see EXPRESSIONS)
    "brow_raise",  # 0 none .. 1 full: brows raised (on top of the identity's brow height)
)

NEUTRAL_FACTORS = {
    "yaw": 0.0, "pitch": 0.0, "roll": 0.0, "distance": 1.0, "tx": 0.0, "ty": 0.0,
    "mouth_open": 0.0, "blink": 0.0, "eye_theta": 0.0, "eye_phi": 0.0,
    "smile": 0.0, "brow_raise": 0.0,
}
# At full strength: mouth corners (outer 48/54, inner 60/64) move this far up and out, their lip
# neighbours half as far; the brows move up this far (millimetres).
SMILE_LIFT_MM, SMILE_WIDEN_MM = 5.0, 3.5
BROW_LIFT_MM = 7.0

Factors = Union[Mapping[str, float], np.ndarray, Sequence[float]]

# dlib 68-point index groups (right / left: the subject's).
JAW = np.arange(0, 17)
RIGHT_BROW, LEFT_BROW = np.arange(17, 22), np.arange(22, 27)
RIGHT_EYE, LEFT_EYE = np.arange(36, 42), np.arange(42, 48)

# The 3D mean face of the 68 dlib landmarks, millimetres, head frame: x and y are dlib's frontal
# mean shape (the landmark template of OpenFace's dlib alignment, made left-right symmetric and
# scaled to millimetres), z is the depth of OpenFace's 3D mean shape. Using dlib's own layout
# keeps dlib's predictions unbiased on these faces (OpenFace's 3D shape puts the upper jaw points
# ~10 mm lower and the nose tip ~4 mm higher than dlib does); the upper jaw points sit a further
# 2-6 mm higher, where dlib's predictor puts them on these renders.
_MEAN_FACE = np.array([
    [-71.7, -45.8, 47.4], [-71.4, -26.7, 45.0], [-69.5, -7.4, 43.5], [-65.7, 12.5, 42.0],
    [-58.4, 31.2, 38.1], [-47.0, 48.6, 30.8], [-33.2, 63.8, 18.9], [-17.6, 74.6, 4.4],
    [0.0, 77.7, -0.9], [17.6, 74.6, 4.4], [33.2, 63.8, 18.9], [47.0, 48.6, 30.8],
    [58.4, 31.2, 38.1], [65.7, 12.5, 42.0], [69.5, -7.4, 43.5], [71.4, -26.7, 45.0],
    [71.7, -45.8, 47.4], [-56.9, -54.0, 12.9], [-47.9, -61.0, 6.3], [-35.9, -62.8, -0.3],
    [-23.5, -60.8, -6.9], [-11.8, -55.8, -12.1], [11.8, -55.8, -12.1], [23.5, -60.8, -6.9],
    [35.9, -62.8, -0.3], [47.9, -61.0, 6.3], [56.9, -54.0, 12.9], [0.0, -41.7, -13.4],
    [0.0, -29.2, -21.2], [0.0, -16.7, -29.3], [0.0, -4.0, -36.9], [-13.9, 4.0, -20.5],
    [-7.3, 6.7, -23.6], [0.0, 9.1, -25.9], [7.3, 6.7, -23.6], [13.9, 4.0, -20.5],
    [-42.7, -40.5, 6.0], [-35.2, -44.9, 2.4], [-26.0, -44.7, 0.8], [-18.3, -38.8, -0.4],
    [-26.7, -37.1, -0.7], [-35.7, -37.3, 0.9], [18.3, -38.8, -0.4], [26.0, -44.7, 0.8],
    [35.2, -44.9, 2.4], [42.7, -40.5, 6.0], [35.7, -37.3, 0.9], [26.7, -37.1, -0.7],
    [-27.9, 26.5, -2.7], [-17.7, 22.4, -15.8], [-7.4, 20.6, -22.6], [0.0, 22.4, -23.7],
    [7.4, 20.6, -22.6], [17.7, 22.4, -15.8], [27.9, 26.5, -2.7], [18.1, 37.0, -15.1],
    [8.0, 41.6, -22.5], [0.0, 42.4, -23.6], [-8.0, 41.6, -22.5], [-18.1, 37.0, -15.1],
    [-23.5, 27.2, -5.2], [-7.5, 26.8, -20.9], [0.0, 27.5, -22.2], [7.5, 26.8, -20.9],
    [23.5, 27.2, -5.2], [7.6, 32.1, -20.5], [0.0, 33.1, -21.9], [-7.6, 32.1, -20.5],
], np.float64)


def _closed_mouth_mean_face() -> np.ndarray:
  """The mean face with the inner lips meeting halfway, centred on its landmark centroid."""
  face = _MEAN_FACE.copy()
  upper, lower = np.array([61, 62, 63]), np.array([67, 66, 65])
  middle = (face[upper, 1:] + face[lower, 1:]) / 2
  face[upper, 1:] = middle
  face[lower, 1:] = middle
  return face - face.mean(axis=0)


MEAN_FACE = _closed_mouth_mean_face()

# Jaw opening: a rotation about an ear-to-ear axis through _JAW_PIVOT, weighted per landmark. The
# axis sits far back so that the lower lip and chin move mostly down (as the real jaw's rotation
# combined with its forward glide does): at full opening the lips part by ~20 mm, the chin drops
# ~16 mm and moves back ~10 mm.
_JAW_PIVOT = np.array([0.0, 10.0, 110.0])
_MAX_JAW_ANGLE = np.deg2rad(8.5)
_JAW_WEIGHTS = np.zeros(68)
_JAW_WEIGHTS[0:17] = [0.0, 0.15, 0.35, 0.55, 0.75, 0.9, 1.0, 1.0, 1.0, 1.0, 1.0, 0.9, 0.75, 0.55,
                      0.35, 0.15, 0.0]
_JAW_WEIGHTS[[55, 56, 57, 58, 59, 65, 66, 67]] = 1.0
_JAW_WEIGHTS[[48, 54, 60, 64]] = 0.45

# dlib marks the visible face contour, so the jaw points slide on the cheek to stay on the
# silhouette as the head turns: each moves on a horizontal ellipse through it, of half width |x|
# and this front-to-back radius (mm), to where the ellipse's normal is perpendicular to the view.
_CONTOUR_DEPTH = np.array(
    [55.0, 55.0, 55.0, 52.0, 46.0, 38.0, 28.0, 15.0, 0.0, 15.0, 28.0, 38.0, 46.0, 52.0, 55.0,
     55.0, 55.0])
_MAX_CONTOUR_SLIDE = np.deg2rad(60.0)


def _color_field(**kwargs):
  return dataclasses.field(metadata={"size": 3}, **kwargs)


@dataclasses.dataclass(frozen=True)
class Identity:
  """Everything about a head that stays fixed while it talks.

  Geometry fields multiply parts of the mean face (1 = mean); colours are linear RGB in [0, 1].
  """
  # Face geometry.
  face_width: float
  face_height: float
  jaw_width: float
  eye_size: float
  nose_length: float
  nose_width: float
  mouth_width: float
  lip_thickness: float
  brow_raise: float        # millimetres, > 0 raises the brows
  brow_thickness: float    # millimetres
  # Colours.
  skin_rgb: tuple[float, float, float] = _color_field()
  lip_rgb: tuple[float, float, float] = _color_field()
  hair_rgb: tuple[float, float, float] = _color_field()
  iris_rgb: tuple[float, float, float] = _color_field()
  # Hair shape.
  hairline: float = -88.0      # head-frame y of the hairline above the forehead (mm)
  hair_volume: float = 1.08    # hair shell size relative to the cranium
  hair_length: float = -20.0   # head-frame y where the hair ends at the sides and back (mm)
  fringe: float = 0.0          # 0 .. 1, how far a fringe comes down the forehead
  # Skin texture.
  texture_seed: float = 0.0    # integer-valued seed of the skin and background noise
  blotchiness: float = 0.05
  freckles: float = 0.0        # 0 .. 1 density
  # Scene.
  background_top_rgb: tuple[float, float, float] = _color_field(default=(0.5, 0.5, 0.5))
  background_bottom_rgb: tuple[float, float, float] = _color_field(default=(0.3, 0.3, 0.3))
  shirt_rgb: tuple[float, float, float] = _color_field(default=(0.2, 0.3, 0.5))
  light_azimuth: float = 0.0    # degrees, > 0: light from the image's right
  light_elevation: float = 20.0  # degrees, > 0: light from above
  ambient: float = 0.45

  @classmethod
  def field_sizes(cls) -> list[tuple[str, int]]:
    """(field name, number of floats) in vector order."""
    return [(f.name, f.metadata.get("size", 1)) for f in dataclasses.fields(cls)]

  @classmethod
  def vector_size(cls) -> int:
    return sum(size for _, size in cls.field_sizes())

  def to_array(self) -> np.ndarray:
    """The identity as a float32 vector (fields in declaration order, colours as 3 floats)."""
    return np.concatenate([
        np.atleast_1d(np.asarray(getattr(self, name), np.float32))
        for name, _ in self.field_sizes()])

  @classmethod
  def from_array(cls, vector: np.ndarray) -> "Identity":
    """Inverse of `to_array`."""
    vector = np.asarray(vector, np.float32).reshape(-1)
    if vector.size != cls.vector_size():
      raise ValueError(f"an Identity vector has {cls.vector_size()} floats, got {vector.size}")
    values, offset = {}, 0
    for name, size in cls.field_sizes():
      chunk = [float(v) for v in vector[offset:offset + size]]
      values[name] = tuple(chunk) if size > 1 else chunk[0]
      offset += size
    return cls(**values)


_SKIN_LIGHT, _SKIN_DARK = np.array([0.97, 0.80, 0.68]), np.array([0.50, 0.33, 0.23])
_HAIR_COLORS = np.array([
    [0.07, 0.05, 0.04], [0.20, 0.12, 0.07], [0.38, 0.24, 0.12], [0.75, 0.60, 0.36],
    [0.55, 0.22, 0.09], [0.62, 0.60, 0.58], [0.12, 0.10, 0.10]])
_IRIS_COLORS = np.array([
    [0.30, 0.17, 0.08], [0.18, 0.10, 0.05], [0.25, 0.42, 0.62], [0.30, 0.45, 0.30],
    [0.45, 0.48, 0.50]])


def _luminance(rgb) -> float:
  return float(np.dot(rgb, [0.299, 0.587, 0.114]))


def sample_identity(rng: np.random.Generator) -> Identity:
  """A random identity (values already rounded to float32, so `to_array` round-trips exactly)."""
  def jitter(color, amount):
    return np.clip(color + rng.normal(0.0, amount, 3), 0.02, 0.98)

  skin = (_SKIN_LIGHT + (_SKIN_DARK - _SKIN_LIGHT) * rng.uniform() ** 1.2) * rng.uniform(
      0.95, 1.05, 3)
  lip = np.clip(skin * np.array([0.8, 0.48, 0.48]) + np.array([0.08, 0.0, 0.02])
                + rng.normal(0.0, 0.02, 3), 0.02, 0.95)
  hair = jitter(_HAIR_COLORS[rng.integers(len(_HAIR_COLORS))], 0.03)
  iris = jitter(_IRIS_COLORS[rng.integers(len(_IRIS_COLORS))], 0.03)
  style = rng.uniform()
  if style < 0.45:    # short
    hair_length = rng.uniform(-35.0, -5.0)
  elif style < 0.75:  # medium
    hair_length = rng.uniform(10.0, 60.0)
  else:               # long
    hair_length = rng.uniform(90.0, 170.0)
  # Backgrounds of any colour, but not the skin's brightness (a face lost in a wall of its own
  # tone is hard for any detector, and of little use).
  background_top = rng.uniform(0.05, 0.95, 3)
  while abs(_luminance(background_top) - _luminance(skin)) < 0.15:
    background_top = rng.uniform(0.05, 0.95, 3)
  background_bottom = np.clip(background_top * rng.uniform(0.6, 1.1) + rng.normal(0, 0.06, 3),
                              0.02, 0.98)
  identity = Identity(
      face_width=rng.uniform(0.92, 1.08), face_height=rng.uniform(0.93, 1.07),
      jaw_width=rng.uniform(0.88, 1.10), eye_size=rng.uniform(0.88, 1.12),
      nose_length=rng.uniform(0.90, 1.12), nose_width=rng.uniform(0.85, 1.20),
      mouth_width=rng.uniform(0.88, 1.12), lip_thickness=rng.uniform(0.75, 1.30),
      brow_raise=rng.uniform(-2.5, 4.0), brow_thickness=rng.uniform(3.5, 7.5),
      skin_rgb=tuple(skin), lip_rgb=tuple(lip), hair_rgb=tuple(hair), iris_rgb=tuple(iris),
      hairline=rng.uniform(-100.0, -82.0), hair_volume=rng.uniform(1.03, 1.14),
      hair_length=hair_length, fringe=rng.uniform(0.2, 1.0) if rng.uniform() < 0.3 else 0.0,
      texture_seed=float(rng.integers(0, 2 ** 24)), blotchiness=rng.uniform(0.02, 0.08),
      freckles=rng.uniform(0.2, 1.0) if rng.uniform() < 0.25 else 0.0,
      background_top_rgb=tuple(background_top), background_bottom_rgb=tuple(background_bottom),
      shirt_rgb=tuple(rng.uniform(0.05, 0.9, 3)),
      light_azimuth=rng.uniform(-25.0, 25.0), light_elevation=rng.uniform(10.0, 35.0),
      ambient=rng.uniform(0.4, 0.6))
  return Identity.from_array(identity.to_array())


# ----------------------------------------------------------------------------------------------
# Factors.
# ----------------------------------------------------------------------------------------------
def factors_to_vector(factors: Mapping[str, float]) -> np.ndarray:
  """Factor dict -> float32 [len(FACTOR_NAMES)] (missing names take NEUTRAL_FACTORS values)."""
  unknown = set(factors) - set(FACTOR_NAMES)
  if unknown:
    raise KeyError(f"unknown factors {sorted(unknown)}; known: {FACTOR_NAMES}")
  return np.array([factors.get(name, NEUTRAL_FACTORS[name]) for name in FACTOR_NAMES],
                  np.float32)


def factors_from_vector(vector: np.ndarray) -> dict[str, float]:
  """float32 [len(FACTOR_NAMES)] -> factor dict."""
  vector = np.asarray(vector, np.float32).reshape(-1)
  if vector.size != len(FACTOR_NAMES):
    raise ValueError(f"a factor vector has {len(FACTOR_NAMES)} values, got {vector.size}")
  return {name: float(value) for name, value in zip(FACTOR_NAMES, vector)}


def factor_matrix(factors: Factors) -> tuple[np.ndarray, bool]:
  """Any accepted form of factors -> (float32 [T, len(FACTOR_NAMES)], whether it was one frame)."""
  if isinstance(factors, Mapping):
    return factors_to_vector(factors)[None], True
  matrix = np.asarray(factors, np.float32)
  if matrix.ndim == 1:
    if matrix.size != len(FACTOR_NAMES):
      raise ValueError(f"a factor vector has {len(FACTOR_NAMES)} values, got {matrix.size}")
    return matrix[None], True
  if matrix.ndim != 2 or matrix.shape[1] != len(FACTOR_NAMES):
    raise ValueError(f"factors must be [T, {len(FACTOR_NAMES)}], got shape {matrix.shape}")
  return matrix, False


def factor_columns(matrix: np.ndarray) -> dict[str, np.ndarray]:
  """[T, len(FACTOR_NAMES)] -> {name: float64 [T]}."""
  return {name: matrix[:, i].astype(np.float64) for i, name in enumerate(FACTOR_NAMES)}


def _axis_rotation(angle: np.ndarray, axis: int) -> np.ndarray:
  """Rotations [..., 3, 3] by `angle` (radians) about the x (0), y (1) or z (2) axis."""
  cos, sin = np.cos(angle), np.sin(angle)
  zero, one = np.zeros_like(angle), np.ones_like(angle)
  rows = {
      0: [[one, zero, zero], [zero, cos, -sin], [zero, sin, cos]],
      1: [[cos, zero, sin], [zero, one, zero], [-sin, zero, cos]],
      2: [[cos, -sin, zero], [sin, cos, zero], [zero, zero, one]],
  }[axis]
  return np.stack([np.stack(row, axis=-1) for row in rows], axis=-2)


def rotation_matrix(yaw, pitch, roll) -> np.ndarray:
  """Head-to-camera rotation [..., 3, 3] for angles in degrees: Rz(roll) @ Ry(yaw) @ Rx(-pitch).

  The angles may be scalars or arrays of one shape.
  """
  yaw, pitch, roll = np.broadcast_arrays(*(np.deg2rad(np.asarray(a, np.float64))
                                           for a in (yaw, pitch, roll)))
  return _axis_rotation(roll, 2) @ _axis_rotation(yaw, 1) @ _axis_rotation(-pitch, 0)


def direction_from_angles(theta, phi) -> np.ndarray:
  """Unit looking directions [..., 3] for (theta, phi) in degrees; (0, 0) looks at the camera
  (-z), theta > 0 towards the image's left, phi > 0 up."""
  theta, phi = np.deg2rad(np.asarray(theta, np.float64)), np.deg2rad(np.asarray(phi, np.float64))
  theta, phi = np.broadcast_arrays(theta, phi)
  return np.stack([-np.sin(theta) * np.cos(phi), -np.sin(phi), -np.cos(theta) * np.cos(phi)],
                  axis=-1)


def angles_from_direction(direction: np.ndarray) -> np.ndarray:
  """Inverse of `direction_from_angles`: [..., 3] -> [..., 2] (theta, phi) in degrees."""
  direction = np.asarray(direction, np.float64)
  x, y, z = np.moveaxis(direction / np.linalg.norm(direction, axis=-1, keepdims=True), -1, 0)
  return np.rad2deg(np.stack([np.arctan2(-x, -z), np.arcsin(np.clip(-y, -1.0, 1.0))], axis=-1))


def camera_gaze(factors: Factors) -> np.ndarray:
  """Camera-space gaze (theta, phi) in degrees, the head rotation applied to the eyes' direction:
  [2] for one frame, [T, 2] for a factor matrix [T, len(FACTOR_NAMES)]."""
  matrix, single = factor_matrix(factors)
  column = factor_columns(matrix)
  rotation = rotation_matrix(column["yaw"], column["pitch"], column["roll"])
  eyes = direction_from_angles(column["eye_theta"], column["eye_phi"])
  gaze = angles_from_direction(np.einsum("tij,tj->ti", rotation, eyes)).astype(np.float32)
  return gaze[0] if single else gaze


# ----------------------------------------------------------------------------------------------
# Identity geometry (cached: a clip renders one identity many times).
# ----------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Ellipsoid:
  center: np.ndarray  # [3] head frame
  axes: np.ndarray    # [3] semi-axes


@dataclasses.dataclass(frozen=True)
class HeadModel:
  """An identity's 3D head at rest (mouth closed, eyes open), head frame, millimetres."""
  landmarks: np.ndarray       # [68, 3]
  interocular: float
  eye_centers: np.ndarray     # [2, 3] right, left (corner midpoints)
  nose_walls: np.ndarray      # [2, 4, 3] outer edges of the nose's side walls (right, left)
  nostrils: np.ndarray        # [2, 3]
  ears: np.ndarray            # [2, 3] ear centres (right, left)
  cranium: Ellipsoid
  lower_face: Ellipsoid
  hair_shell: Ellipsoid
  neck_top: np.ndarray        # [3]


@functools.lru_cache(maxsize=64)
def _head_model_cached(identity_bytes: bytes) -> HeadModel:
  identity = Identity.from_array(np.frombuffer(identity_bytes, np.float32))
  face = MEAN_FACE.copy()
  # Lower-jaw width: more towards the chin.
  towards_chin = np.clip(face[:, 1] / 70.0, 0.0, 1.0)
  towards_chin[17:] = 0.0
  face[:, 0] *= 1.0 + (identity.jaw_width - 1.0) * towards_chin
  for eye in (RIGHT_EYE, LEFT_EYE):
    center = face[eye[[0, 3]]].mean(axis=0)
    face[eye] = center + (face[eye] - center) * identity.eye_size
  nose_top = face[27, 1]
  face[27:36, 1] = nose_top + (face[27:36, 1] - nose_top) * identity.nose_length
  face[31:36, 0] *= identity.nose_width
  face[48:68, 0] *= identity.mouth_width
  lip_line = face[[61, 62, 63], 1].mean()
  face[48:60, 1] = lip_line + (face[48:60, 1] - lip_line) * identity.lip_thickness
  face[17:27, 1] -= identity.brow_raise
  face[:, 0] *= identity.face_width
  face[:, 1] *= identity.face_height
  scale = np.array([identity.face_width, identity.face_height, 1.0])

  eye_centers = np.stack([face[[36, 39]].mean(axis=0), face[[42, 45]].mean(axis=0)])
  # Side walls of the nose: from beside the bridge down to beside the alae, set back.
  walls = []
  for sign, ala in ((-1.0, 31), (1.0, 35)):
    half_width = np.linspace(4.0, abs(face[ala, 0] - face[33, 0]) * 0.9, 4) * identity.face_width
    walls.append(face[27:31] + np.stack(
        [sign * half_width, np.zeros(4), np.linspace(6.0, 14.0, 4)], axis=1))
  nostrils = np.stack([face[32] * 0.6 + face[31] * 0.4, face[34] * 0.6 + face[35] * 0.4])
  nostrils += np.array([0.0, -1.5, 2.0])
  cranium = Ellipsoid(np.array([0.0, -45.0, 75.0]) * scale, np.array([78.0, 105.0, 98.0]) * scale)
  lower_face = Ellipsoid(np.array([0.0, 24.0, 40.0]) * scale,
                         np.array([70.0 * (0.5 + 0.5 * identity.jaw_width), 60.0, 64.0]) * scale)
  return HeadModel(
      landmarks=face,
      interocular=float(np.linalg.norm(eye_centers[1] - eye_centers[0])),
      eye_centers=eye_centers, nose_walls=np.stack(walls), nostrils=nostrils,
      ears=np.array([[-76.0, -22.0, 72.0], [76.0, -22.0, 72.0]]) * scale,
      cranium=cranium, lower_face=lower_face,
      hair_shell=Ellipsoid(cranium.center + np.array([0.0, -4.0, 4.0]),
                           cranium.axes * identity.hair_volume),
      neck_top=np.array([0.0, 25.0, 55.0]) * scale)


def head_model(identity: Identity) -> HeadModel:
  return _head_model_cached(identity.to_array().tobytes())


# ----------------------------------------------------------------------------------------------
# Pose and animation of the 3D points, for T frames at once.
# ----------------------------------------------------------------------------------------------
def posed_landmarks(model: HeadModel, column: Mapping[str, np.ndarray],
                    rotation: np.ndarray) -> np.ndarray:
  """[T, 68, 3] head-frame landmarks of T frames: jaw opened, lids closed, contour on the
  silhouette of the head turned by `rotation` [T, 3, 3]."""
  points = _animated_landmarks(model, column["mouth_open"], column["blink"], column["smile"],
                               column["brow_raise"])
  view = rotation[:, 2]  # the camera's z axis in the head frame, [T, 3]
  half_width = np.abs(model.landmarks[JAW, 0])
  side = np.sign(model.landmarks[JAW, 0])
  # The silhouette point (side A cos a, C sin a) of each contour ellipse: tan a = -side v_x C /
  # (v_z A).
  angle = np.clip(np.arctan2(-side * view[:, :1] * _CONTOUR_DEPTH,
                             view[:, 2:] * np.maximum(half_width, 1e-6)),
                  -_MAX_CONTOUR_SLIDE, _MAX_CONTOUR_SLIDE)
  points[:, JAW, 0] += side * half_width * (np.cos(angle) - 1.0)
  points[:, JAW, 2] += _CONTOUR_DEPTH * np.sin(angle)
  return points


def _animated_landmarks(model: HeadModel, mouth_open: np.ndarray, blink: np.ndarray,
                        smile: np.ndarray, brow_raise: np.ndarray) -> np.ndarray:
  """[T, 68, 3] head-frame landmarks with the jaw opened, the lids closed, the mouth corners
  smiling and the brows raised as asked ([T] each)."""
  angle = _MAX_JAW_ANGLE * np.clip(mouth_open, 0.0, 1.0)[:, None] * _JAW_WEIGHTS  # [T, 68]
  relative = model.landmarks - _JAW_PIVOT
  cos, sin = np.cos(angle), np.sin(angle)
  points = np.repeat(model.landmarks[None], len(angle), axis=0)
  # Rotation about the ear-to-ear axis: the chin moves down (+y) and back (+z).
  points[..., 1] = _JAW_PIVOT[1] + cos * relative[:, 1] - sin * relative[:, 2]
  points[..., 2] = _JAW_PIVOT[2] + sin * relative[:, 1] + cos * relative[:, 2]
  closing = np.clip(blink, 0.0, 1.0)[:, None, None]
  upper, lower = np.array([37, 38, 43, 44]), np.array([41, 40, 47, 46])
  closed = 0.7 * points[:, lower] + 0.3 * points[:, upper]
  points[:, upper] += closing * (closed - points[:, upper])
  points[:, lower] += closing * (closed - points[:, lower])
  smiling = np.clip(smile, 0.0, 1.0)[:, None]  # [T, 1]
  corners = np.array([48, 54, 60, 64, 49, 53, 59, 55])
  weight = np.array([1.0, 1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.5])
  outward = np.sign(model.landmarks[corners, 0])
  points[:, corners, 0] += smiling * weight * outward * SMILE_WIDEN_MM
  points[:, corners, 1] -= smiling * weight * SMILE_LIFT_MM  # y grows downwards
  points[:, 17:27, 1] -= np.clip(brow_raise, 0.0, 1.0)[:, None] * BROW_LIFT_MM
  return points


@dataclasses.dataclass(frozen=True)
class Views:
  """The camera of T frames: head-to-camera rotations, pixels per millimetre, origin pixels."""
  rotation: np.ndarray  # [T, 3, 3]
  scale: np.ndarray     # [T]
  origin: np.ndarray    # [T, 2]

  def project(self, points: np.ndarray) -> np.ndarray:
    """Head-frame points [N, 3] or [T, N, 3] -> pixels [T, N, 2]."""
    rotated = np.matmul(points, np.swapaxes(self.rotation[:, :2], 1, 2))
    return rotated * self.scale[:, None, None] + self.origin[:, None, :]

  def project_vector(self, vector: np.ndarray) -> np.ndarray:
    """Head-frame vectors [3] or [T, 3] (millimetres) -> image vectors [T, 2] (pixels)."""
    vector = np.broadcast_to(vector, (len(self.scale), 3))
    return np.einsum("tij,tj->ti", self.rotation[:, :2], vector) * self.scale[:, None]


def camera_views(model: HeadModel, factors: np.ndarray, resolution: int) -> Views:
  column = factor_columns(factors)
  distance = np.maximum(column["distance"], 1e-3)
  scale = records.REFERENCE_INTEROCULAR * resolution / distance / model.interocular
  origin = np.stack([resolution / 2 + column["tx"] * resolution,
                     resolution / 2 + column["ty"] * resolution], axis=1)
  return Views(rotation_matrix(column["yaw"], column["pitch"], column["roll"]), scale, origin)


def project_landmarks(identity: Identity, factors: Factors, resolution: int) -> np.ndarray:
  """Ground-truth landmarks in pixels without rendering: float32 [68, 2], or [T, 68, 2] for a
  factor matrix [T, len(FACTOR_NAMES)]."""
  matrix, single = factor_matrix(factors)
  column = factor_columns(matrix)
  model = head_model(identity)
  views = camera_views(model, matrix, resolution)
  points = views.project(posed_landmarks(model, column, views.rotation))
  return points[0].astype(np.float32) if single else points.astype(np.float32)
