"""SynthTalk's procedural head renderer: any identity, head pose and facial dynamics, on demand.

Pure numpy, vectorised over the frames of a sequence. A head is a 3D face model (the 68 dlib
landmark points on a 3D mean face, deformed per identity, animated by the mouth opening and
blinks) plus shading surfaces (ellipsoids for the cranium, the lower face and the hair volume). A
frame rotates and projects those points and draws the features (eyes with irises that follow the
gaze, lids, brows, nose, lips, mouth interior with teeth, ears, hair, neck, shoulders) at the
projected positions, so the ground-truth landmarks of a frame are where its features are drawn.

API: `Identity` (with `sample_identity`, `to_array`, `from_array`), `FACTOR_NAMES` with
`factors_to_vector` / `factors_from_vector`, `render`, `render_with_landmarks`, `render_frames`
(a sequence at once), `project_landmarks`, `camera_gaze`, `rotation_matrix`.

Conventions (those of `vasa_jax.records`):
  * Camera frame: x to the image's right, y down, z away from the camera. Head model frame: the
    same axes for a frontal face; units are millimetres; the origin is the centroid of the 68
    frontal landmarks.
  * Rotation `R = Rz(roll) @ Ry(yaw) @ Rx(-pitch)` maps head points to camera points (see
    `rotation_matrix`): yaw > 0 turns the face to the image's left (the subject's right),
    pitch > 0 looks up, roll > 0 tilts the head clockwise in the image. It is the rotation that
    `data_prep.head_geometry.angles_to_rotation` writes in its y-up frame.
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

from vasa_jax import records

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
)

NEUTRAL_FACTORS = {
    "yaw": 0.0, "pitch": 0.0, "roll": 0.0, "distance": 1.0, "tx": 0.0, "ty": 0.0,
    "mouth_open": 0.0, "blink": 0.0, "eye_theta": 0.0, "eye_phi": 0.0,
}

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

_EYEBALL_DEPTH = 11.0   # eyeball centre behind the eye's corner midpoint (mm)
_EYEBALL_RADIUS = 12.0
_IRIS_RADIUS = 5.8
_PUPIL_RADIUS = 2.2

# Texture maps cover this head-frame rectangle (x0, x1, y0, y1), in millimetres.
_TEXTURE_EXTENT = (-100.0, 100.0, -190.0, 110.0)


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


def _factor_matrix(factors: Factors) -> tuple[np.ndarray, bool]:
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


def _factor_columns(matrix: np.ndarray) -> dict[str, np.ndarray]:
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
  matrix, single = _factor_matrix(factors)
  column = _factor_columns(matrix)
  rotation = rotation_matrix(column["yaw"], column["pitch"], column["roll"])
  eyes = direction_from_angles(column["eye_theta"], column["eye_phi"])
  gaze = angles_from_direction(np.einsum("tij,tj->ti", rotation, eyes)).astype(np.float32)
  return gaze[0] if single else gaze


# ----------------------------------------------------------------------------------------------
# Identity geometry and textures (cached: a clip renders one identity many times).
# ----------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class _Ellipsoid:
  center: np.ndarray  # [3] head frame
  axes: np.ndarray    # [3] semi-axes


@dataclasses.dataclass(frozen=True)
class _HeadModel:
  """An identity's 3D head at rest (mouth closed, eyes open), head frame, millimetres."""
  landmarks: np.ndarray       # [68, 3]
  interocular: float
  eye_centers: np.ndarray     # [2, 3] right, left (corner midpoints)
  nose_walls: np.ndarray      # [2, 4, 3] outer edges of the nose's side walls (right, left)
  nostrils: np.ndarray        # [2, 3]
  ears: np.ndarray            # [2, 3] ear centres (right, left)
  cranium: _Ellipsoid
  lower_face: _Ellipsoid
  hair_shell: _Ellipsoid
  neck_top: np.ndarray        # [3]


@functools.lru_cache(maxsize=64)
def _head_model_cached(identity_bytes: bytes) -> _HeadModel:
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
  cranium = _Ellipsoid(np.array([0.0, -45.0, 75.0]) * scale, np.array([78.0, 105.0, 98.0]) * scale)
  lower_face = _Ellipsoid(np.array([0.0, 24.0, 40.0]) * scale,
                          np.array([70.0 * (0.5 + 0.5 * identity.jaw_width), 60.0, 64.0]) * scale)
  return _HeadModel(
      landmarks=face,
      interocular=float(np.linalg.norm(eye_centers[1] - eye_centers[0])),
      eye_centers=eye_centers, nose_walls=np.stack(walls), nostrils=nostrils,
      ears=np.array([[-76.0, -22.0, 72.0], [76.0, -22.0, 72.0]]) * scale,
      cranium=cranium, lower_face=lower_face,
      hair_shell=_Ellipsoid(cranium.center + np.array([0.0, -4.0, 4.0]),
                            cranium.axes * identity.hair_volume),
      neck_top=np.array([0.0, 25.0, 55.0]) * scale)


def _head_model(identity: Identity) -> _HeadModel:
  return _head_model_cached(identity.to_array().tobytes())


def _smooth_noise(rng: np.random.Generator, size: int, cutoff: float) -> np.ndarray:
  """Unit-variance low-pass noise [size, size] (Gaussian spectrum of `cutoff` cycles/image)."""
  spectrum = np.fft.rfft2(rng.normal(size=(size, size)))
  fy = np.fft.fftfreq(size)[:, None] * size
  fx = np.fft.rfftfreq(size)[None, :] * size
  noise = np.fft.irfft2(spectrum * np.exp(-(fx ** 2 + fy ** 2) / (2 * cutoff ** 2)), s=(size, size))
  return noise / (noise.std() + 1e-8)


def _resize_bilinear(array: np.ndarray, size: int) -> np.ndarray:
  """Bilinear resize of a square 2D array to [size, size] (corners aligned)."""
  source = np.arange(array.shape[0])
  target = np.linspace(0, array.shape[0] - 1, size)
  rows = np.stack([np.interp(target, source, column) for column in array.T], axis=1)
  return np.stack([np.interp(target, source, row) for row in rows])


@functools.lru_cache(maxsize=64)
def _skin_texture_cached(identity_bytes: bytes, size: int) -> np.ndarray:
  """Albedo multiplier [size, size] over _TEXTURE_EXTENT: blotches and freckles."""
  identity = Identity.from_array(np.frombuffer(identity_bytes, np.float32))
  rng = np.random.default_rng(int(identity.texture_seed))
  texture = 1.0 + identity.blotchiness * _resize_bilinear(_smooth_noise(rng, 64, 4.0), size)
  count = int(identity.freckles * 150)
  if count:
    # Freckles gather on the cheeks and the nose, about 1.5 mm each.
    x0, x1, y0, y1 = _TEXTURE_EXTENT
    freckles = np.zeros((size, size))
    col = np.clip(((rng.normal(0.0, 28.0, count) - x0) / (x1 - x0) * size).astype(int), 0,
                  size - 1)
    row = np.clip(((rng.normal(-12.0, 14.0, count) - y0) / (y1 - y0) * size).astype(int), 0,
                  size - 1)
    freckles[row, col] = rng.uniform(0.3, 0.8, count)
    radius = max(1, round(size / 128))
    freckles = np.maximum.reduce([np.roll(freckles, (dy, dx), axis=(0, 1))
                                  for dy in range(radius) for dx in range(radius)])
    texture *= 1.0 - 0.3 * freckles
  return texture.astype(np.float32)


@functools.lru_cache(maxsize=64)
def _background_cached(identity_bytes: bytes, resolution: int) -> np.ndarray:
  identity = Identity.from_array(np.frombuffer(identity_bytes, np.float32))
  rng = np.random.default_rng(int(identity.texture_seed) + 1)
  top, bottom = np.array(identity.background_top_rgb), np.array(identity.background_bottom_rgb)
  v = np.linspace(0.0, 1.0, resolution)[:, None, None]
  image = top * (1.0 - v) + bottom * v
  noise = _resize_bilinear(_smooth_noise(rng, 32, 2.5), resolution)
  image = image * (1.0 + 0.08 * noise[..., None])
  u = np.linspace(-1.0, 1.0, resolution)
  vignette = 1.0 - 0.18 * (u[:, None] ** 2 + u[None, :] ** 2)
  return np.clip(image * vignette[..., None], 0.0, 1.0).astype(np.float32)


# ----------------------------------------------------------------------------------------------
# Pose and animation of the 3D points, for T frames at once.
# ----------------------------------------------------------------------------------------------
def _posed_landmarks(model: _HeadModel, column: Mapping[str, np.ndarray],
                     rotation: np.ndarray) -> np.ndarray:
  """[T, 68, 3] head-frame landmarks of T frames: jaw opened, lids closed, contour on the
  silhouette of the head turned by `rotation` [T, 3, 3]."""
  points = _animated_landmarks(model, column["mouth_open"], column["blink"])
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


def _animated_landmarks(model: _HeadModel, mouth_open: np.ndarray,
                        blink: np.ndarray) -> np.ndarray:
  """[T, 68, 3] head-frame landmarks with the jaw opened and the lids closed as asked ([T])."""
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
  return points


@dataclasses.dataclass(frozen=True)
class _Views:
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


def _views(model: _HeadModel, factors: np.ndarray, resolution: int) -> _Views:
  column = _factor_columns(factors)
  distance = np.maximum(column["distance"], 1e-3)
  scale = records.REFERENCE_INTEROCULAR * resolution / distance / model.interocular
  origin = np.stack([resolution / 2 + column["tx"] * resolution,
                     resolution / 2 + column["ty"] * resolution], axis=1)
  return _Views(rotation_matrix(column["yaw"], column["pitch"], column["roll"]), scale, origin)


def project_landmarks(identity: Identity, factors: Factors, resolution: int) -> np.ndarray:
  """Ground-truth landmarks in pixels without rendering: float32 [68, 2], or [T, 68, 2] for a
  factor matrix [T, len(FACTOR_NAMES)]."""
  matrix, single = _factor_matrix(factors)
  column = _factor_columns(matrix)
  model = _head_model(identity)
  views = _views(model, matrix, resolution)
  points = views.project(_posed_landmarks(model, column, views.rotation))
  return points[0].astype(np.float32) if single else points.astype(np.float32)


# ----------------------------------------------------------------------------------------------
# Rasterisation helpers: soft (anti-aliased) coverage in [0, 1] on pixel grids of T frames.
# Per-frame parameters are arrays with a leading T axis.
# ----------------------------------------------------------------------------------------------
def _per_frame(values) -> np.ndarray:
  """[T] -> float32 [T, 1, 1], to broadcast against [T, h, w] grids."""
  return np.asarray(values, np.float32).reshape(-1, 1, 1)


def _coverage(signed_distance_px):
  """Coverage of a pixel whose centre is `signed_distance_px` inside an edge."""
  return np.clip(signed_distance_px + 0.5, 0.0, 1.0)


def _smoothstep(x, lo, hi):
  t = np.clip((x - lo) / (hi - lo), 0.0, 1.0)
  return t * t * (3.0 - 2.0 * t)


_CURVE_SAMPLES = 6  # per segment of a Catmull-Rom curve
_CR_T = np.linspace(0.0, 1.0, _CURVE_SAMPLES, endpoint=False)
_CR_BASIS = 0.5 * np.stack([
    -_CR_T ** 3 + 2 * _CR_T ** 2 - _CR_T,
    3 * _CR_T ** 3 - 5 * _CR_T ** 2 + 2,
    -3 * _CR_T ** 3 + 4 * _CR_T ** 2 + _CR_T,
    _CR_T ** 3 - _CR_T ** 2], axis=1)  # [samples, 4]


def _smooth_curve(points: np.ndarray, closed: bool = False) -> np.ndarray:
  """Catmull-Rom curves through `points` [T, N, 2] (open or closed), densely sampled."""
  if closed:
    padded = np.concatenate([points[:, -1:], points, points[:, :2]], axis=1)
  else:
    padded = np.concatenate([2 * points[:, :1] - points[:, 1:2], points,
                             2 * points[:, -1:] - points[:, -2:-1]], axis=1)
  count = padded.shape[1] - 3
  segments = np.stack([padded[:, i:i + count] for i in range(4)], axis=2)  # [T, S, 4, 2]
  curve = np.einsum("ck,tskd->tscd", _CR_BASIS, segments).reshape(len(points), -1, 2)
  return curve if closed else np.concatenate([curve, points[:, -1:]], axis=1)


def _batched_interp(x: np.ndarray, xp: np.ndarray, fp: np.ndarray) -> np.ndarray:
  """np.interp per frame: x [T, ...], xp and fp [T, K] (xp non-decreasing along K).

  One np.interp call: each frame's abscissae are shifted by a multiple of a large offset.
  Outside its xp range a frame's result is (nearly) its end value.
  """
  frames = len(xp)
  low = min(float(xp.min()), float(x.min()))
  span = max(float(xp.max()), float(x.max())) - low + 1.0
  shift = (np.arange(frames, dtype=np.float64) * 4.0 * span)[:, None]
  flat_x = (x.reshape(frames, -1).astype(np.float64) - low) + shift
  result = np.interp(flat_x.ravel(), ((xp - low) + shift).ravel(), fp.ravel())
  return result.reshape(x.shape).astype(np.float32)


class _Patch:
  """A window of the frames (the union over T of the given points' boxes) with its pixel-centre
  coordinates x [1, 1, w], y [1, h, 1]."""

  def __init__(self, points: np.ndarray, margin: float, resolution: int):
    points = points.reshape(-1, 2)
    x0, y0 = np.clip(np.floor(points.min(axis=0) - margin).astype(int), 0, resolution)
    x1, y1 = np.clip(np.ceil(points.max(axis=0) + margin).astype(int) + 1, 0, resolution)
    self.rows, self.cols = slice(y0, y1), slice(x0, x1)
    self.empty = x1 <= x0 or y1 <= y0
    self.x = np.arange(x0, x1, dtype=np.float32)[None, None, :]
    self.y = np.arange(y0, y1, dtype=np.float32)[None, :, None]


def _local_frame(patch: _Patch, origin: np.ndarray, axis: np.ndarray):
  """Unit axes and the pixels' coordinates (s along `axis`, t across it) from `origin`."""
  axis = axis / np.maximum(np.linalg.norm(axis, axis=-1, keepdims=True), 1e-6)
  across = np.stack([-axis[:, 1], axis[:, 0]], axis=1)
  dx, dy = patch.x - _per_frame(origin[:, 0]), patch.y - _per_frame(origin[:, 1])
  s = dx * _per_frame(axis[:, 0]) + dy * _per_frame(axis[:, 1])
  t = dx * _per_frame(across[:, 0]) + dy * _per_frame(across[:, 1])
  return axis, across, s, t


def _band(patch: _Patch, origin: np.ndarray, axis: np.ndarray, upper: np.ndarray,
          lower: np.ndarray, softness_px=1.0) -> np.ndarray:
  """Coverage [T, h, w] of the region between two curves running along `axis`.

  `upper`, `lower` [T, K, 2] are image points; in the frame of `origin` [T, 2] and `axis` [T, 2]
  (s along the axis, t across it: towards the image's bottom for an axis pointing right) the
  region is upper(s) <= t <= lower(s). Edges ramp over `softness_px` ([T] or scalar; 1:
  anti-aliased).
  """
  axis, across, s, t = _local_frame(patch, origin, axis)

  def curve_in_frame(curve):
    relative = curve - origin[:, None, :]
    along = np.maximum.accumulate(np.einsum("tkd,td->tk", relative, axis), axis=1)
    return along, np.einsum("tkd,td->tk", relative, across)

  upper_s, upper_t = curve_in_frame(upper)
  lower_s, lower_t = curve_in_frame(lower)
  inside = np.minimum(t - _batched_interp(s, upper_s, upper_t),
                      _batched_interp(s, lower_s, lower_t) - t)
  start = _per_frame(np.maximum(upper_s[:, 0], lower_s[:, 0]))
  end = _per_frame(np.minimum(upper_s[:, -1], lower_s[:, -1]))
  distance = np.minimum(inside, np.minimum(s - start, end - s))
  softness = _per_frame(np.broadcast_to(softness_px, (len(origin),)))
  return np.clip(distance / np.maximum(softness, 1.0) + np.where(softness > 1.0, 0.0, 0.5),
                 0.0, 1.0)


def _stroke(patch: _Patch, origin, axis, curve: np.ndarray, half_width_px,
            softness_px=1.0) -> np.ndarray:
  """Coverage of a line of half width `half_width_px` ([T] or scalar) along `curve` [T, K, 2]."""
  unit = axis / np.maximum(np.linalg.norm(axis, axis=-1, keepdims=True), 1e-6)
  offset = np.stack([-unit[:, 1], unit[:, 0]], axis=1) * np.reshape(half_width_px, (-1, 1))
  return _band(patch, origin, axis, curve - offset[:, None], curve + offset[:, None],
               softness_px)


def _ellipse(patch: _Patch, center: np.ndarray, axis_u: np.ndarray, axis_v: np.ndarray,
             blur_px=0.0) -> np.ndarray:
  """Coverage [T, h, w] of the 2D ellipses {center + a u + b v : a^2 + b^2 <= 1}.

  `center`, `axis_u`, `axis_v` are [T, 2] image points and vectors. With `blur_px` > 0 ([T] or
  scalar) the edge is a linear ramp that wide inwards (soft shadows and highlights).
  """
  u, v = np.broadcast_to(axis_u, center.shape), np.broadcast_to(axis_v, center.shape)
  det = u[:, 0] * v[:, 1] - v[:, 0] * u[:, 1]
  valid = np.abs(det) > 1e-6
  det = np.where(valid, det, 1.0)
  dx, dy = patch.x - _per_frame(center[:, 0]), patch.y - _per_frame(center[:, 1])
  a = (dx * _per_frame(v[:, 1]) - dy * _per_frame(v[:, 0])) / _per_frame(det)
  b = (dy * _per_frame(u[:, 0]) - dx * _per_frame(u[:, 1])) / _per_frame(det)
  half_minor = np.minimum(np.linalg.norm(u, axis=1), np.linalg.norm(v, axis=1))
  edge = (1.0 - np.sqrt(a * a + b * b)) * _per_frame(half_minor)
  blur = _per_frame(np.broadcast_to(blur_px, (len(center),)))
  coverage = np.clip(edge / np.maximum(blur, 1.0) + np.where(blur > 0, 0.0, 0.5), 0.0, 1.0)
  return coverage * _per_frame(valid)


def _paint(image: np.ndarray, patch: _Patch, alpha: np.ndarray, color) -> None:
  """Alpha-blends `color` (broadcastable to [T, h, w, 3]) into the patch of `image`, in place."""
  region = image[:, patch.rows, patch.cols]
  region += (np.asarray(color, np.float32) - region) * alpha[..., None]


def _shade(image: np.ndarray, patch: _Patch, alpha: np.ndarray, factor) -> None:
  """Multiplies the patch by 1 - alpha (1 - factor): darkens (factor < 1) or lightens.

  `factor` is a scalar or one value per frame ([T]).
  """
  factor = np.asarray(factor, np.float32)
  if factor.ndim:
    factor = _per_frame(factor)
  image[:, patch.rows, patch.cols] *= (1.0 - alpha * (1.0 - factor))[..., None]


# ----------------------------------------------------------------------------------------------
# Ray casting of the head surfaces (scaled orthographic camera, one ray per pixel).
# ----------------------------------------------------------------------------------------------
@dataclasses.dataclass
class _Hit:
  coverage: np.ndarray  # [T, R, R] anti-aliased silhouette
  inside: np.ndarray    # [T, R, R] distance inside the silhouette, millimetres (< 0 outside)
  depth: np.ndarray     # [T, R, R] camera z of the front hit (1e6 where missed)
  point: list           # 3 x [T, R, R] head-frame hit point
  light: np.ndarray     # [T, R, R] Lambert factor n.l in [-1, 1] (0 where missed)
  gloss: np.ndarray     # [T, R, R] n.h with the Blinn half vector (0 where missed)


def _cast(ellipsoid: _Ellipsoid, views: _Views, grid_x, grid_y, light_head: np.ndarray,
          half_head: np.ndarray) -> _Hit:
  """Intersects each pixel's viewing ray with an ellipsoid (head frame)."""
  rows = views.rotation  # camera point (X, Y, t) is head point X r0 + Y r1 + t r2
  inv_axes = 1.0 / ellipsoid.axes
  along_x, along_y, along_t = rows[:, 0] * inv_axes, rows[:, 1] * inv_axes, rows[:, 2] * inv_axes
  offset = -ellipsoid.center * inv_axes
  cam_x = (grid_x - _per_frame(views.origin[:, 0])) / _per_frame(views.scale)  # [T, 1, R]
  cam_y = (grid_y - _per_frame(views.origin[:, 1])) / _per_frame(views.scale)  # [T, R, 1]
  # The scaled ray o' + t d' with o' = X along_x + Y along_y + offset and d' = along_t hits the
  # unit sphere where A t^2 + B t + C = 0: A = |d'|^2, B = 2 o'.d', C = |o'|^2 - 1.
  quad_a = _per_frame(np.sum(along_t * along_t, axis=1))
  quad_b = 2 * (cam_x * _per_frame(np.sum(along_x * along_t, axis=1))
                + (cam_y * _per_frame(np.sum(along_y * along_t, axis=1))
                   + _per_frame(along_t @ offset)))
  o = [cam_x * _per_frame(along_x[:, i]) + (cam_y * _per_frame(along_y[:, i]) + float(offset[i]))
       for i in range(3)]
  disc = quad_b * quad_b - 4.0 * quad_a * (o[0] * o[0] + o[1] * o[1] + o[2] * o[2] - 1.0)
  # Distance inside the silhouette, first order: disc / (8 A^1.5) millimetres.
  inside = disc / (8.0 * quad_a ** 1.5)
  hit = disc > 0
  t = (-quad_b - np.sqrt(np.maximum(disc, 0.0))) / (2.0 * quad_a)
  point = [cam_x * _per_frame(rows[:, 0, i]) + cam_y * _per_frame(rows[:, 1, i])
           + t * _per_frame(rows[:, 2, i]) for i in range(3)]
  normal = [(o[i] + t * _per_frame(along_t[:, i])) * np.float32(inv_axes[i]) for i in range(3)]
  inv_norm = 1.0 / (np.sqrt(normal[0] ** 2 + normal[1] ** 2 + normal[2] ** 2) + 1e-9)

  def dot(vectors):
    value = sum(normal[i] * _per_frame(vectors[:, i]) for i in range(3)) * inv_norm
    return np.where(hit, value, 0.0)

  return _Hit(_coverage(inside * _per_frame(views.scale)), inside,
              np.where(hit, t, 1e6), point, dot(light_head), dot(half_head))


def _sample_texture(texture: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
  """Nearest-texel lookup of a head-frame texture at head-frame coordinates (mm)."""
  x0, x1, y0, y1 = _TEXTURE_EXTENT
  size = texture.shape[0]
  col = np.clip(((x - x0) * (size / (x1 - x0))).astype(np.int32), 0, size - 1)
  row = np.clip(((y - y0) * (size / (y1 - y0))).astype(np.int32), 0, size - 1)
  return texture.reshape(-1)[row * size + col]


# ----------------------------------------------------------------------------------------------
# The renderer.
# ----------------------------------------------------------------------------------------------
def render(identity: Identity, factors: Factors, resolution: int) -> np.ndarray:
  """Renders one frame: uint8 [resolution, resolution, 3] RGB.

  Args:
    identity: the head.
    factors: a dict keyed by FACTOR_NAMES (missing ones neutral) or a vector in that order.
    resolution: the side of the square frame in pixels.
  """
  return render_with_landmarks(identity, factors, resolution)[0]


def render_with_landmarks(identity: Identity, factors: Factors,
                          resolution: int) -> tuple[np.ndarray, np.ndarray]:
  """Renders one frame: (image uint8 [R, R, 3], ground-truth landmarks float32 [68, 2] pixels)."""
  matrix, _ = _factor_matrix(factors)
  if len(matrix) != 1:
    raise ValueError("render_with_landmarks renders one frame; use render_frames for several")
  images, landmarks = render_frames(identity, matrix, resolution)
  return images[0], landmarks[0]


# Frames rendered together at most (times pixels per frame): bounds the working memory.
_PIXELS_PER_CHUNK = 1 << 20


def render_frames(identity: Identity, factor_matrix: np.ndarray,
                  resolution: int) -> tuple[np.ndarray, np.ndarray]:
  """Renders a sequence: factor_matrix float [T, len(FACTOR_NAMES)] -> (images uint8
  [T, R, R, 3], landmarks float32 [T, 68, 2]). Frame t is the same as `render` of row t."""
  matrix, _ = _factor_matrix(factor_matrix)
  chunk = max(1, _PIXELS_PER_CHUNK // (resolution * resolution))
  images, landmarks = [], []
  for start in range(0, len(matrix), chunk):
    chunk_images, chunk_landmarks = _render_chunk(identity, matrix[start:start + chunk],
                                                  resolution)
    images.append(chunk_images)
    landmarks.append(chunk_landmarks)
  return np.concatenate(images), np.concatenate(landmarks)


def _render_chunk(identity: Identity, factors: np.ndarray,
                  resolution: int) -> tuple[np.ndarray, np.ndarray]:
  column = _factor_columns(factors)
  frames = len(factors)
  model = _head_model(identity)
  identity_bytes = identity.to_array().tobytes()
  views = _views(model, factors, resolution)
  points = views.project(_posed_landmarks(model, column, views.rotation))
  skin = np.asarray(identity.skin_rgb, np.float32)
  hair = np.asarray(identity.hair_rgb, np.float32)

  azimuth, elevation = np.deg2rad([identity.light_azimuth, identity.light_elevation])
  light_camera = np.array([np.sin(azimuth) * np.cos(elevation), -np.sin(elevation),
                           -np.cos(azimuth) * np.cos(elevation)])
  half_vector = light_camera + np.array([0.0, 0.0, -1.0])
  half_vector /= np.linalg.norm(half_vector)
  # Camera-frame vectors in each frame's head frame: R^T v.
  light_head = np.einsum("tji,j->ti", views.rotation, light_camera)
  half_head = np.einsum("tji,j->ti", views.rotation, half_vector)
  ambient = np.float32(identity.ambient)

  def lit(lambert):
    return ambient + (1.0 - ambient) * np.clip((lambert + 0.25) / 1.25, 0.0, 1.0)

  image = np.repeat(_background_cached(identity_bytes, resolution)[None], frames, axis=0)
  full = _Patch(np.array([[0.0, 0.0], [resolution - 1.0, resolution - 1.0]]), 0.0, resolution)
  grid_x, grid_y = full.x, full.y
  hair_shell = _cast(model.hair_shell, views, grid_x, grid_y, light_head, half_head)
  cranium = _cast(model.cranium, views, grid_x, grid_y, light_head, half_head)
  lower_face = _cast(model.lower_face, views, grid_x, grid_y, light_head, half_head)

  if identity.hair_length > 20.0:
    _draw_hanging_hair(image, full, model, views, identity, hair)
  _draw_body(image, model, views, identity, skin, light_camera, resolution)

  outline, jaw_rim = _face_outline(model, views, points, resolution)
  # Below the eyes the far side of the face ends at the jaw contour, not at the cranium's
  # silhouette (the cranium is wider than the jaw there).
  x_side = _per_frame(views.rotation[:, 2, 0] / 3.0)  # > 0 on the far side for x * x_side
  far_side = np.clip(cranium.point[0] * x_side, 0.0, 1.0)
  cut = _smoothstep(cranium.point[1], -45.0, -30.0) * far_side
  skin_coverage = np.maximum(cranium.coverage * (1.0 - cut), outline)

  # Shading: the two face surfaces blended by depth, each fading out over its last 10 mm
  # towards its silhouette (where the surface turns away: Lambert 0), a darker rim along the jaw.
  prefer_lower = 1.0 / (1.0 + np.exp(np.clip((lower_face.depth - cranium.depth) / 6.0, -30, 30)))
  weight_lower = _smoothstep(lower_face.inside, 0.0, 10.0)
  weight_cranium = _smoothstep(cranium.inside, 0.0, 10.0)
  both = weight_lower * weight_cranium
  weight_lower = weight_lower - both * (1.0 - prefer_lower)
  weight_cranium = weight_cranium - both * prefer_lower
  lambert = weight_lower * lower_face.light + weight_cranium * cranium.light
  specular = 0.1 * np.clip(weight_lower * lower_face.gloss + weight_cranium * cranium.gloss,
                           0.0, 1.0) ** 40
  shading = lit(lambert) * (1.0 - 0.3 * jaw_rim)
  on_lower = weight_lower > weight_cranium
  albedo = _sample_texture(
      _skin_texture_cached(identity_bytes, int(np.clip(resolution, 128, 512))),
      np.where(on_lower, lower_face.point[0], cranium.point[0]),
      np.where(on_lower, lower_face.point[1], cranium.point[1]))
  skin_color = skin * (albedo * shading)[..., None] + specular[..., None]

  # Ears turned away go under the skin, ears facing the camera over it.
  ear_normals = np.array([[-0.9, 0.0, -0.45], [0.9, 0.0, -0.45]])
  ears_in_front = np.einsum("tj,ej->te", views.rotation[:, 2], ear_normals) < 0.0  # [T, 2]
  for side in range(2):
    _draw_ear(image, model, views, side, ~ears_in_front[:, side], skin, light_camera, ambient,
              resolution)
  image += (skin_color - image) * skin_coverage[..., None]
  for side in range(2):
    _draw_ear(image, model, views, side, ears_in_front[:, side], skin, light_camera, ambient,
              resolution)

  # Hair on the head: where the hair shell lies above the hair boundary, never over the face.
  hair_alpha = _hair_coverage(identity, hair_shell) * (1.0 - outline)
  hair_shading = lit(hair_shell.light) + 0.1 * np.clip(hair_shell.gloss, 0.0, 1.0) ** 40
  image += (hair * hair_shading[..., None] - image) * hair_alpha[..., None]

  _draw_face_features(image, identity, model, views, column, points, shading, light_camera,
                      resolution)
  pixels = (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
  return pixels, points.astype(np.float32)


def _face_outline(model: _HeadModel, views: _Views, points: np.ndarray,
                  resolution: int) -> tuple[np.ndarray, np.ndarray]:
  """The face contour: jaw landmarks closed by an arc over the brows (a star-shaped polygon).

  Returns its coverage [T, R, R] and a rim weight in [0, 1] that peaks inside the jaw part of
  the contour where the contour is a silhouette (the face turns away from the camera there).
  """
  frames = len(points)
  brow_arc = np.array([
      [1.0, -52.0, 30.0], [0.9, -66.0, 12.0], [0.55, -76.0, -4.0], [0.0, -80.0, -10.0],
      [-0.55, -76.0, -4.0], [-0.9, -66.0, 12.0], [-1.0, -52.0, 30.0]])
  arc = brow_arc * np.array([abs(model.landmarks[16, 0]), model.landmarks[19, 1] / -62.0, 1.0])
  dense = _smooth_curve(np.concatenate([points[:, JAW], views.project(arc)], axis=1), closed=True)
  # Where the jaw's outward normal turns away from the camera the contour is a silhouette; on
  # the near side of a turned head the cheek goes on beyond it.
  jaw = model.landmarks[JAW]
  outward = np.stack([jaw[:, 0], 0.8 * np.maximum(jaw[:, 1], 0.0), np.zeros(17)], axis=1)
  outward /= np.linalg.norm(outward, axis=1, keepdims=True)
  outward_depth = np.einsum("nj,tj->tn", outward, views.rotation[:, 2])  # camera z, [T, 17]
  silhouette = np.clip(1.0 + 2.0 * outward_depth, 0.2, 1.0)
  rim_weight = np.repeat(np.concatenate([silhouette[:, :16], np.zeros((frames, len(arc) + 1))],
                                        axis=1), _CURVE_SAMPLES, axis=1)
  center = views.project(np.array([[0.0, -5.0, 15.0]]))[:, 0]
  relative = dense - center[:, None]
  angles = np.arctan2(relative[..., 1], relative[..., 0])
  radii = np.hypot(relative[..., 0], relative[..., 1])
  order = np.argsort(angles, axis=1)
  angles, radii, rim_weight = (np.take_along_axis(a, order, axis=1)
                               for a in (angles, radii, rim_weight))
  # Wrap around: one point on each side from the other end of the circle.
  angles = np.concatenate([angles[:, -1:] - 2 * np.pi, angles, angles[:, :1] + 2 * np.pi], axis=1)
  radii = np.concatenate([radii[:, -1:], radii, radii[:, :1]], axis=1)
  rim_weight = np.concatenate([rim_weight[:, -1:], rim_weight, rim_weight[:, :1]], axis=1)

  coverage = np.zeros((frames, resolution, resolution), np.float32)
  rim = np.zeros_like(coverage)
  patch = _Patch(dense, 2.0, resolution)
  if patch.empty:
    return coverage, rim
  dx, dy = patch.x - _per_frame(center[:, 0]), patch.y - _per_frame(center[:, 1])
  pixel_angle = np.arctan2(dy, dx)
  inside = _batched_interp(pixel_angle, angles, radii) - np.sqrt(dx * dx + dy * dy)
  coverage[:, patch.rows, patch.cols] = _coverage(inside)
  rim[:, patch.rows, patch.cols] = _batched_interp(pixel_angle, angles, rim_weight) * (
      1.0 - _smoothstep(inside, 0.0, 4.0 * _per_frame(views.scale)))
  return coverage, rim


def _hair_coverage(identity: Identity, shell: _Hit) -> np.ndarray:
  """Where the hair shell carries hair: above a boundary that runs from the hairline (and fringe)
  at the front to above the ears at the sides (over them for long hair) and down the back."""
  x, y, z = shell.point
  # The hairline recedes at the temples; a fringe brings it down to 8 mm above the brows.
  fringe_room = max(-70.0 - identity.hairline, 0.0)
  front = (identity.hairline + 0.006 * x * x
           + identity.fringe * fringe_room * np.exp(-(x / 45.0) ** 2))
  side = identity.hair_length if identity.hair_length > 60.0 else min(identity.hair_length, -30.0)
  boundary = front + (side - front) * _smoothstep(z, 35.0, 62.0)
  boundary = boundary + (identity.hair_length - boundary) * _smoothstep(z, 70.0, 110.0)
  return shell.coverage * _coverage((boundary - y) * 0.6)


def _draw_hanging_hair(image, full: _Patch, model: _HeadModel, views: _Views,
                       identity: Identity, hair) -> None:
  """Long hair falling from the hair shell's widest line down to `hair_length` (behind)."""
  center = views.project(model.hair_shell.center[None])[:, 0]
  bottom = views.project(np.array([[0.0, identity.hair_length, model.hair_shell.center[2]]]))[:, 0]
  half_width = _per_frame(model.hair_shell.axes[0] * views.scale * 0.95)
  top_y = _per_frame(center[:, 1])
  bottom_y = np.maximum(_per_frame(bottom[:, 1]), top_y + 1.0)
  dx = np.abs(full.x - _per_frame(center[:, 0]))
  narrowing = 1.0 - 0.15 * np.clip((full.y - top_y) / (bottom_y - top_y), 0, 1)
  alpha = _coverage(half_width * narrowing - dx) * _coverage(
      np.minimum(full.y - top_y, bottom_y - full.y))
  shade = 0.55 + 0.25 * np.clip(1.0 - dx / half_width, 0.0, 1.0)
  image += (hair * shade[..., None] - image) * alpha[..., None]


def _draw_body(image, model: _HeadModel, views: _Views, identity: Identity, skin, light_camera,
               resolution: int) -> None:
  """Shoulders (a wide ellipse in the shirt colour) and the neck (a shaded cylinder whose top is
  hidden behind the head, in the shadow of the jaw below the chin)."""
  scale = views.scale
  body_x = views.origin[:, 0]
  shoulder_center = np.stack([body_x, views.origin[:, 1] + 215.0 * scale], axis=1)
  half_size = np.stack([200.0 * scale, 95.0 * scale], axis=1)
  zeros = np.zeros_like(scale)
  shoulders = _Patch(np.stack([shoulder_center - half_size, shoulder_center + half_size], axis=1),
                     2, resolution)
  if not shoulders.empty:
    alpha = _ellipse(shoulders, shoulder_center, np.stack([200.0 * scale, zeros], axis=1),
                     np.stack([zeros, 95.0 * scale], axis=1))
    across = np.clip((shoulders.x - _per_frame(body_x)) / _per_frame(200.0 * scale), -1, 1)
    shade = identity.ambient + (1 - identity.ambient) * np.clip(
        0.6 + 0.4 * across * light_camera[0] - 0.3 * across ** 2, 0, 1)
    _paint(image, shoulders, alpha,
           np.asarray(identity.shirt_rgb, np.float32) * shade[..., None])
  neck_top = views.project(model.neck_top[None])[:, 0]
  neck_bottom = np.stack([(neck_top[:, 0] + body_x) / 2, shoulder_center[:, 1] - 60.0 * scale],
                         axis=1)
  half_width = 0.5 * (model.landmarks[12, 0] - model.landmarks[4, 0]) * 0.68 * scale
  axis = neck_bottom - neck_top
  across = np.stack([-axis[:, 1], axis[:, 0]], axis=1) / np.maximum(
      np.linalg.norm(axis, axis=1, keepdims=True), 1e-6)
  offset = across * half_width[:, None]
  left = np.stack([neck_top + offset, neck_bottom + offset * 1.15], axis=1)
  right = np.stack([neck_top - offset, neck_bottom - offset * 1.15], axis=1)
  neck = _Patch(np.concatenate([left, right], axis=1), 2, resolution)
  if neck.empty:
    return
  alpha = _band(neck, neck_top, axis, right, left)
  # Cylinder shading across the neck, in the shadow of the jaw at the top.
  u = np.clip(((neck.x - _per_frame(neck_top[:, 0])) * _per_frame(across[:, 0])
               + (neck.y - _per_frame(neck_top[:, 1])) * _per_frame(across[:, 1]))
              / _per_frame(half_width), -1, 1)
  lambert = -u * light_camera[0] - np.sqrt(1 - u * u) * light_camera[2]
  chin = views.project(model.landmarks[8][None])[:, 0]  # at rest: the shadow ignores the jaw
  below_jaw = np.clip((neck.y - _per_frame(chin[:, 1])) / _per_frame(25.0 * scale), 0.0, 1.0)
  shade = (identity.ambient + (1 - identity.ambient) * 0.8 * np.clip(lambert, 0, 1)) * (
      0.45 + 0.25 * below_jaw)
  _paint(image, neck, alpha, skin * shade[..., None])


def _draw_ear(image, model: _HeadModel, views: _Views, side: int, visible: np.ndarray, skin,
              light_camera, ambient: float, resolution: int) -> None:
  """One ear (0: the subject's right, 1: left) in the frames where `visible` [T]."""
  if not visible.any():
    return
  sign = (-1.0, 1.0)[side]
  center = views.project(model.ears[side][None])[:, 0]
  axis_u = views.project_vector(np.array([0.0, 30.0, 3.0]))
  axis_v = views.project_vector(np.array([sign * 6.0, 0.0, 17.0]))
  patch = _Patch(np.stack([center + axis_u, center - axis_u, center + axis_v, center - axis_v],
                          axis=1), 2, resolution)
  if patch.empty:
    return
  normal = np.array([sign * 0.9, 0.0, -0.45]) / np.hypot(0.9, 0.45)
  facing = np.einsum("tij,j->ti", views.rotation, normal) @ light_camera
  brightness = ambient + (1.0 - ambient) * 0.8 * np.maximum(facing, 0.0)
  alpha = _ellipse(patch, center, axis_u, axis_v) * _per_frame(visible)
  _paint(image, patch, alpha, skin * _per_frame(brightness)[..., None])
  inner = _ellipse(patch, center + axis_v * 0.15, axis_u * 0.6, axis_v * 0.45, blur_px=1.5)
  _shade(image, patch, inner * _per_frame(visible), 0.7)


def _draw_face_features(image, identity: Identity, model: _HeadModel, views: _Views, column,
                        points, shading, light_camera, resolution: int) -> None:
  """Eye sockets, brows, eyes, nose and mouth at the projected landmarks."""
  scale = views.scale
  # Eye sockets: soft shadow between the brow and the eye, and under the eye.
  for eye, brow in ((RIGHT_EYE, RIGHT_BROW), (LEFT_EYE, LEFT_BROW)):
    center = 0.55 * points[:, eye].mean(axis=1) + 0.45 * points[:, brow].mean(axis=1)
    axis_u = points[:, eye[3]] - points[:, eye[0]]
    axis_v = views.project_vector(np.array([0.0, 15.0, 0.0]))
    patch = _Patch(np.stack([center + axis_u, center - axis_u, center + axis_v,
                             center - axis_v], axis=1), 2, resolution)
    if not patch.empty:
      _shade(image, patch, _ellipse(patch, center, axis_u, axis_v, blur_px=7 * scale), 0.6)

  # Brows: bands around the brow landmarks, tapering towards the outer ends.
  brow_color = np.minimum(np.asarray(identity.hair_rgb, np.float32) * 0.6 + 0.03,
                          np.asarray(identity.skin_rgb, np.float32) * 0.45)
  for brow, inner_end_first in ((RIGHT_BROW, False), (LEFT_BROW, True)):
    line = points[:, brow]  # left to right in the image
    center_line = _smooth_curve(line)
    axis = line[:, -1] - line[:, 0]
    taper = np.linspace(1.0, 0.45, center_line.shape[1]) ** 0.6
    if not inner_end_first:
      taper = taper[::-1]
    unit = axis / np.linalg.norm(axis, axis=1, keepdims=True)
    down = np.stack([-unit[:, 1], unit[:, 0]], axis=1)
    half = 0.5 * identity.brow_thickness * scale[:, None, None] * taper[None, :, None]
    upper, lower = center_line - down[:, None] * half, center_line + down[:, None] * half
    patch = _Patch(np.concatenate([upper, lower], axis=1), 2, resolution)
    if not patch.empty:
      alpha = _band(patch, line[:, 0], axis, upper, lower)
      _paint(image, patch, alpha * 0.9,
             brow_color * shading[:, patch.rows, patch.cols][..., None])

  eye_direction = direction_from_angles(column["eye_theta"], column["eye_phi"])  # [T, 3]
  for side, eye in enumerate((RIGHT_EYE, LEFT_EYE)):
    _draw_eye(image, identity, model, views, side, eye, points, eye_direction, shading,
              resolution)
  _draw_nose(image, model, views, points, light_camera, resolution)
  _draw_mouth(image, identity, views, points, shading, resolution)


def _draw_eye(image, identity: Identity, model: _HeadModel, views: _Views, side: int, eye, points,
              eye_direction, shading, resolution: int) -> None:
  """Sclera, iris and pupil (following the gaze) between the lids; lashes, lid line, crease."""
  scale = views.scale
  # Lids from corner to corner, left to right in the image (both eyes list that corner first).
  upper = points[:, eye[:4]]
  lower = points[:, eye[[0, 5, 4, 3]]]
  upper_curve, lower_curve = _smooth_curve(upper), _smooth_curve(lower)
  left_corner, axis = upper[:, 0], upper[:, -1] - upper[:, 0]
  patch = _Patch(np.concatenate([upper_curve, lower_curve], axis=1), 4 * scale.max() + 2,
                 resolution)
  if patch.empty:
    return
  opening = _band(patch, left_corner, axis, upper_curve, lower_curve)
  local_shading = shading[:, patch.rows, patch.cols][..., None]
  # Sclera, darker towards the corners.
  middle = _per_frame((upper[:, 0, 0] + upper[:, -1, 0]) / 2)
  half_length = _per_frame(0.5 * np.linalg.norm(axis, axis=1) + 1e-6)
  along = np.clip(np.abs(patch.x - middle) / half_length, 0, 1)
  sclera = np.array([0.93, 0.90, 0.86], np.float32) * (1.0 - 0.25 * along[..., None] ** 2)
  _paint(image, patch, opening, sclera * np.minimum(local_shading * 1.1, 1.0))
  # Iris and pupil: discs on the eyeball, facing the gaze direction.
  eyeball = model.eye_centers[side] + np.array([0.0, 0.0, _EYEBALL_DEPTH])
  iris_center = views.project((eyeball + _EYEBALL_RADIUS * eye_direction)[:, None])[:, 0]
  disc_u = np.cross(np.array([0.0, 1.0, 0.0]), eye_direction)
  disc_u /= np.linalg.norm(disc_u, axis=1, keepdims=True)
  disc_v = np.cross(eye_direction, disc_u)
  u_image, v_image = views.project_vector(disc_u), views.project_vector(disc_v)
  iris_radius = _IRIS_RADIUS * identity.eye_size
  iris = _ellipse(patch, iris_center, u_image * iris_radius, v_image * iris_radius) * opening
  ring = _ellipse(patch, iris_center, u_image * iris_radius * 0.75, v_image * iris_radius * 0.75,
                  blur_px=1.0)
  iris_color = np.asarray(identity.iris_rgb, np.float32)
  _paint(image, patch, iris, iris_color * (0.6 + 0.4 * ring[..., None]) * local_shading)
  pupil_radius = _PUPIL_RADIUS * identity.eye_size
  pupil = _ellipse(patch, iris_center, u_image * pupil_radius, v_image * pupil_radius) * opening
  _paint(image, patch, pupil, np.array([0.03, 0.02, 0.02], np.float32))
  # Shadow of the upper lid on the eyeball, lashes along its edge, a lower lid line, the crease.
  down = views.project_vector(np.array([0.0, 1.0, 0.0]))[:, None]  # [T, 1, 2]
  lid_shadow = _band(patch, left_corner, axis, upper_curve, upper_curve + down * 2.2)
  _shade(image, patch, lid_shadow * opening, 0.55)
  lashes = _band(patch, left_corner, axis, upper_curve - down * 1.0, upper_curve + down * 0.65)
  _paint(image, patch, lashes, np.array([0.06, 0.04, 0.04], np.float32))
  lower_line = _band(patch, left_corner, axis, lower_curve - down * 0.4, lower_curve + down * 0.5)
  _shade(image, patch, lower_line, 0.7)
  eye_center = points[:, eye[[0, 3]]].mean(axis=1)[:, None]
  lift = views.project_vector(np.array([0.0, -4.5, -1.0]))[:, None]
  crease_curve = eye_center + (upper_curve - eye_center) * 1.08 + lift
  crease = _band(patch, left_corner, axis, crease_curve - down * 0.65, crease_curve + down * 0.65)
  _shade(image, patch, crease, 0.8)


def _draw_nose(image, model: _HeadModel, views: _Views, points, light_camera,
               resolution: int) -> None:
  """Side walls shaded by their normals, a lit ridge, the tip, alae, nostrils and the shadow
  under the nose."""
  scale = views.scale
  ridge_points = points[:, 27:31]
  ridge = _smooth_curve(ridge_points)
  top, axis = ridge_points[:, 0], ridge_points[:, -1] - ridge_points[:, 0]
  front_lambert = views.rotation[:, :, 2] @ -light_camera  # R (0, 0, -1) . light
  for side, sign in enumerate((-1.0, 1.0)):
    wall = _smooth_curve(views.project(model.nose_walls[side]))
    normal = views.rotation @ np.array([sign * 0.8, 0.0, -0.6])  # [T, 3]
    brightness = np.clip(0.95 + 0.3 * (normal @ light_camera - front_lambert), 0.6, 1.05)
    patch = _Patch(np.concatenate([ridge, wall], axis=1), 2, resolution)
    if patch.empty:
      continue
    # For an axis pointing down the image, t grows towards the image's left: the subject's right
    # wall (image left) lies at t > 0 from the ridge.
    upper, lower = (ridge, wall) if side == 0 else (wall, ridge)
    alpha = _band(patch, top, axis, upper, lower, softness_px=2.0 * scale)
    _shade(image, patch, alpha, brightness)
    # A wall seen edge-on: the nose's silhouette against the cheek.
    edge_on = _per_frame(normal[:, 2] > -0.45)
    _shade(image, patch, _stroke(patch, top, axis, wall, 0.7 * scale) * edge_on, 0.78)
  patch = _Patch(ridge, 2, resolution)
  if not patch.empty:
    _shade(image, patch, _stroke(patch, top, axis, ridge, 1.5 * scale, softness_px=scale), 1.1)
  tip, base_middle = points[:, 30], points[:, 33]
  patch = _Patch(np.concatenate([points[:, 30:36], points[:, [50, 52]]], axis=1),
                 5 * scale.max() + 2, resolution)
  if patch.empty:
    return
  down = views.project_vector(np.array([0.0, 1.0, 0.0]))
  right = views.project_vector(np.array([1.0, 0.0, 0.0]))
  under = _ellipse(patch, base_middle + down * 4.0, right * 13.0, down * 4.0, blur_px=3 * scale)
  _shade(image, patch, under, 0.68)
  for ala in (31, 35):
    center = points[:, ala] * 0.75 + base_middle * 0.25 - down * 2.5
    _shade(image, patch, _ellipse(patch, center, right * 5.5, down * 5.0, blur_px=2 * scale), 0.82)
  nostrils = views.project(model.nostrils)
  for side in range(2):
    _shade(image, patch, _ellipse(patch, nostrils[:, side], right * 3.6, down * 1.8,
                                  blur_px=0.6 * scale), 0.35)
  highlight = _ellipse(patch, tip - down * 2.0, right * 4.0, down * 3.5, blur_px=2.5 * scale)
  _shade(image, patch, highlight, 1.12)


def _draw_mouth(image, identity: Identity, views: _Views, points, shading,
                resolution: int) -> None:
  """Lips, the mouth interior (a dark line when closed) with upper teeth, corner creases and the
  shadow under the lower lip."""
  scale = views.scale
  left, right = points[:, 48], points[:, 54]
  axis = right - left
  outer_upper = _smooth_curve(points[:, 48:55])
  outer_lower = _smooth_curve(points[:, [48, 59, 58, 57, 56, 55, 54]])
  inner_upper = _smooth_curve(points[:, [48, 60, 61, 62, 63, 64, 54]])
  inner_lower = _smooth_curve(points[:, [48, 60, 67, 66, 65, 64, 54]])
  down = views.project_vector(np.array([0.0, 1.0, 0.0]))
  patch = _Patch(np.concatenate([outer_upper, outer_lower], axis=1), 6 * scale.max() + 2,
                 resolution)
  if patch.empty:
    return
  local_shading = shading[:, patch.rows, patch.cols][..., None]
  chin_shadow = _ellipse(patch, points[:, 57] + down * 5.0, axis * 0.3, down * 4.0,
                         blur_px=3 * scale)
  _shade(image, patch, chin_shadow, 0.85)
  lip_color = np.asarray(identity.lip_rgb, np.float32)
  lips = _band(patch, left, axis, outer_upper, outer_lower)
  _paint(image, patch, lips, lip_color * local_shading)
  _shade(image, patch, _band(patch, left, axis, outer_upper, inner_upper), 0.85)
  lower_highlight = _band(patch, left, axis,
                          outer_lower - down[:, None] * (4.0 * identity.lip_thickness),
                          outer_lower - down[:, None] * (1.5 * identity.lip_thickness))
  _shade(image, patch, lower_highlight * lips, 1.1)
  # The interior: at least a dark line 1 mm thick, with the upper teeth below the upper lip.
  line = down[:, None] * 0.5
  interior = _band(patch, left, axis, inner_upper - line, inner_lower + line)
  _paint(image, patch, interior, np.array([0.16, 0.04, 0.04], np.float32) * local_shading)
  gap_mm = np.linalg.norm(points[:, 66] - points[:, 62], axis=1) / scale
  teeth_mm = np.minimum(gap_mm * 0.45, 5.0)
  teeth = _band(patch, left, axis, inner_upper,
                inner_upper + down[:, None] * teeth_mm[:, None, None])
  middle = (left + right) / 2
  front_teeth = _ellipse(patch, middle, axis * 0.36, down * 25.0, blur_px=2.0 * scale)
  _paint(image, patch, teeth * interior * front_teeth * _per_frame(teeth_mm > 0.6),
         np.array([0.75, 0.72, 0.66], np.float32) * local_shading)
  for corner in (left, right):
    _shade(image, patch, _ellipse(patch, corner, down * 1.6, axis * 0.05, blur_px=scale), 0.6)
