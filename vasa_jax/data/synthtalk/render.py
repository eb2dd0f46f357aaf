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

This module draws the frames. `vasa_jax.data.synthtalk.geometry` (its public names re-exported here)
holds the factors, identities, head model, poses, projection and the conventions (frames,
rotation, projection, pixels, landmarks, gaze); `vasa_jax.data.synthtalk.raster` the rasterisation.
"""

from __future__ import annotations

import numpy as np

from vasa_jax.data.synthtalk import geometry
from vasa_jax.data.synthtalk import raster
# Re-exported: callers use this module for all of the public API.
from vasa_jax.data.synthtalk.geometry import (
    FACTOR_NAMES, JAW, LEFT_BROW, LEFT_EYE, MEAN_FACE, NEUTRAL_FACTORS, RIGHT_BROW, RIGHT_EYE,
    Factors, Identity, angles_from_direction, camera_gaze, direction_from_angles,
    factors_from_vector, factors_to_vector, project_landmarks, rotation_matrix, sample_identity)


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
  matrix, _ = geometry.factor_matrix(factors)
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
  matrix, _ = geometry.factor_matrix(factor_matrix)
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
  column = geometry.factor_columns(factors)
  frames = len(factors)
  model = geometry.head_model(identity)
  identity_bytes = identity.to_array().tobytes()
  views = geometry.camera_views(model, factors, resolution)
  points = views.project(geometry.posed_landmarks(model, column, views.rotation))
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

  image = np.repeat(raster.background_cached(identity_bytes, resolution)[None], frames, axis=0)
  full = raster.Patch(np.array([[0.0, 0.0], [resolution - 1.0, resolution - 1.0]]), 0.0, resolution)
  grid_x, grid_y = full.x, full.y
  hair_shell = raster.cast(model.hair_shell, views, grid_x, grid_y, light_head, half_head)
  cranium = raster.cast(model.cranium, views, grid_x, grid_y, light_head, half_head)
  lower_face = raster.cast(model.lower_face, views, grid_x, grid_y, light_head, half_head)

  if identity.hair_length > 20.0:
    _draw_hanging_hair(image, full, model, views, identity, hair)
  _draw_body(image, model, views, identity, skin, light_camera, resolution)

  outline, jaw_rim = _face_outline(model, views, points, resolution)
  # Below the eyes the far side of the face ends at the jaw contour, not at the cranium's
  # silhouette (the cranium is wider than the jaw there).
  x_side = raster.per_frame(views.rotation[:, 2, 0] / 3.0)  # > 0 on the far side for x * x_side
  far_side = np.clip(cranium.point[0] * x_side, 0.0, 1.0)
  cut = raster.smoothstep(cranium.point[1], -45.0, -30.0) * far_side
  skin_coverage = np.maximum(cranium.coverage * (1.0 - cut), outline)

  # Shading: the two face surfaces blended by depth, each fading out over its last 10 mm
  # towards its silhouette (where the surface turns away: Lambert 0), a darker rim along the jaw.
  prefer_lower = 1.0 / (1.0 + np.exp(np.clip((lower_face.depth - cranium.depth) / 6.0, -30, 30)))
  weight_lower = raster.smoothstep(lower_face.inside, 0.0, 10.0)
  weight_cranium = raster.smoothstep(cranium.inside, 0.0, 10.0)
  both = weight_lower * weight_cranium
  weight_lower = weight_lower - both * (1.0 - prefer_lower)
  weight_cranium = weight_cranium - both * prefer_lower
  lambert = weight_lower * lower_face.light + weight_cranium * cranium.light
  specular = 0.1 * np.clip(weight_lower * lower_face.gloss + weight_cranium * cranium.gloss,
                           0.0, 1.0) ** 40
  shading = lit(lambert) * (1.0 - 0.3 * jaw_rim)
  on_lower = weight_lower > weight_cranium
  albedo = raster.sample_texture(
      raster.skin_texture_cached(identity_bytes, int(np.clip(resolution, 128, 512))),
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


def _face_outline(model: geometry.HeadModel, views: geometry.Views, points: np.ndarray,
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
  dense = raster.smooth_curve(np.concatenate([points[:, JAW], views.project(arc)], axis=1),
                              closed=True)
  # Where the jaw's outward normal turns away from the camera the contour is a silhouette; on
  # the near side of a turned head the cheek goes on beyond it.
  jaw = model.landmarks[JAW]
  outward = np.stack([jaw[:, 0], 0.8 * np.maximum(jaw[:, 1], 0.0), np.zeros(17)], axis=1)
  outward /= np.linalg.norm(outward, axis=1, keepdims=True)
  outward_depth = np.einsum("nj,tj->tn", outward, views.rotation[:, 2])  # camera z, [T, 17]
  silhouette = np.clip(1.0 + 2.0 * outward_depth, 0.2, 1.0)
  rim_weight = np.repeat(np.concatenate([silhouette[:, :16], np.zeros((frames, len(arc) + 1))],
                                        axis=1), raster.CURVE_SAMPLES, axis=1)
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
  patch = raster.Patch(dense, 2.0, resolution)
  if patch.empty:
    return coverage, rim
  dx, dy = patch.x - raster.per_frame(center[:, 0]), patch.y - raster.per_frame(center[:, 1])
  pixel_angle = np.arctan2(dy, dx)
  inside = raster.batched_interp(pixel_angle, angles, radii) - np.sqrt(dx * dx + dy * dy)
  coverage[:, patch.rows, patch.cols] = raster.coverage(inside)
  rim[:, patch.rows, patch.cols] = raster.batched_interp(pixel_angle, angles, rim_weight) * (
      1.0 - raster.smoothstep(inside, 0.0, 4.0 * raster.per_frame(views.scale)))
  return coverage, rim


def _hair_coverage(identity: Identity, shell: raster.Hit) -> np.ndarray:
  """Where the hair shell carries hair: above a boundary that runs from the hairline (and fringe)
  at the front to above the ears at the sides (over them for long hair) and down the back."""
  x, y, z = shell.point
  # The hairline recedes at the temples; a fringe brings it down to 8 mm above the brows.
  fringe_room = max(-70.0 - identity.hairline, 0.0)
  front = (identity.hairline + 0.006 * x * x
           + identity.fringe * fringe_room * np.exp(-(x / 45.0) ** 2))
  side = identity.hair_length if identity.hair_length > 60.0 else min(identity.hair_length, -30.0)
  boundary = front + (side - front) * raster.smoothstep(z, 35.0, 62.0)
  boundary = boundary + (identity.hair_length - boundary) * raster.smoothstep(z, 70.0, 110.0)
  return shell.coverage * raster.coverage((boundary - y) * 0.6)


def _draw_hanging_hair(image, full: raster.Patch, model: geometry.HeadModel, views: geometry.Views,
                       identity: Identity, hair) -> None:
  """Long hair falling from the hair shell's widest line down to `hair_length` (behind)."""
  center = views.project(model.hair_shell.center[None])[:, 0]
  bottom = views.project(np.array([[0.0, identity.hair_length, model.hair_shell.center[2]]]))[:, 0]
  half_width = raster.per_frame(model.hair_shell.axes[0] * views.scale * 0.95)
  top_y = raster.per_frame(center[:, 1])
  bottom_y = np.maximum(raster.per_frame(bottom[:, 1]), top_y + 1.0)
  dx = np.abs(full.x - raster.per_frame(center[:, 0]))
  narrowing = 1.0 - 0.15 * np.clip((full.y - top_y) / (bottom_y - top_y), 0, 1)
  alpha = raster.coverage(half_width * narrowing - dx) * raster.coverage(
      np.minimum(full.y - top_y, bottom_y - full.y))
  shade = 0.55 + 0.25 * np.clip(1.0 - dx / half_width, 0.0, 1.0)
  image += (hair * shade[..., None] - image) * alpha[..., None]


def _draw_body(image, model: geometry.HeadModel, views: geometry.Views, identity: Identity, skin,
               light_camera, resolution: int) -> None:
  """Shoulders (a wide ellipse in the shirt colour) and the neck (a shaded cylinder whose top is
  hidden behind the head, in the shadow of the jaw below the chin)."""
  scale = views.scale
  body_x = views.origin[:, 0]
  shoulder_center = np.stack([body_x, views.origin[:, 1] + 215.0 * scale], axis=1)
  half_size = np.stack([200.0 * scale, 95.0 * scale], axis=1)
  zeros = np.zeros_like(scale)
  shoulders = raster.Patch(
      np.stack([shoulder_center - half_size, shoulder_center + half_size], axis=1), 2, resolution)
  if not shoulders.empty:
    alpha = raster.ellipse(shoulders, shoulder_center, np.stack([200.0 * scale, zeros], axis=1),
                           np.stack([zeros, 95.0 * scale], axis=1))
    across = np.clip((shoulders.x - raster.per_frame(body_x)) / raster.per_frame(200.0 * scale),
                     -1, 1)
    shade = identity.ambient + (1 - identity.ambient) * np.clip(
        0.6 + 0.4 * across * light_camera[0] - 0.3 * across ** 2, 0, 1)
    raster.paint(image, shoulders, alpha,
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
  neck = raster.Patch(np.concatenate([left, right], axis=1), 2, resolution)
  if neck.empty:
    return
  alpha = raster.band(neck, neck_top, axis, right, left)
  # Cylinder shading across the neck, in the shadow of the jaw at the top.
  u = np.clip(((neck.x - raster.per_frame(neck_top[:, 0])) * raster.per_frame(across[:, 0])
               + (neck.y - raster.per_frame(neck_top[:, 1])) * raster.per_frame(across[:, 1]))
              / raster.per_frame(half_width), -1, 1)
  lambert = -u * light_camera[0] - np.sqrt(1 - u * u) * light_camera[2]
  chin = views.project(model.landmarks[8][None])[:, 0]  # at rest: the shadow ignores the jaw
  below_jaw = np.clip((neck.y - raster.per_frame(chin[:, 1])) / raster.per_frame(25.0 * scale),
                      0.0, 1.0)
  shade = (identity.ambient + (1 - identity.ambient) * 0.8 * np.clip(lambert, 0, 1)) * (
      0.45 + 0.25 * below_jaw)
  raster.paint(image, neck, alpha, skin * shade[..., None])


def _draw_ear(image, model: geometry.HeadModel, views: geometry.Views, side: int,
              visible: np.ndarray, skin, light_camera, ambient: float, resolution: int) -> None:
  """One ear (0: the subject's right, 1: left) in the frames where `visible` [T]."""
  if not visible.any():
    return
  sign = (-1.0, 1.0)[side]
  center = views.project(model.ears[side][None])[:, 0]
  axis_u = views.project_vector(np.array([0.0, 30.0, 3.0]))
  axis_v = views.project_vector(np.array([sign * 6.0, 0.0, 17.0]))
  patch = raster.Patch(np.stack([center + axis_u, center - axis_u, center + axis_v,
                                 center - axis_v], axis=1), 2, resolution)
  if patch.empty:
    return
  normal = np.array([sign * 0.9, 0.0, -0.45]) / np.hypot(0.9, 0.45)
  facing = np.einsum("tij,j->ti", views.rotation, normal) @ light_camera
  brightness = ambient + (1.0 - ambient) * 0.8 * np.maximum(facing, 0.0)
  alpha = raster.ellipse(patch, center, axis_u, axis_v) * raster.per_frame(visible)
  raster.paint(image, patch, alpha, skin * raster.per_frame(brightness)[..., None])
  inner = raster.ellipse(patch, center + axis_v * 0.15, axis_u * 0.6, axis_v * 0.45, blur_px=1.5)
  raster.shade(image, patch, inner * raster.per_frame(visible), 0.7)


def _draw_face_features(image, identity: Identity, model: geometry.HeadModel, views: geometry.Views,
                        column, points, shading, light_camera, resolution: int) -> None:
  """Eye sockets, brows, eyes, nose and mouth at the projected landmarks."""
  scale = views.scale
  # Eye sockets: soft shadow between the brow and the eye, and under the eye.
  for eye, brow in ((RIGHT_EYE, RIGHT_BROW), (LEFT_EYE, LEFT_BROW)):
    center = 0.55 * points[:, eye].mean(axis=1) + 0.45 * points[:, brow].mean(axis=1)
    axis_u = points[:, eye[3]] - points[:, eye[0]]
    axis_v = views.project_vector(np.array([0.0, 15.0, 0.0]))
    patch = raster.Patch(np.stack([center + axis_u, center - axis_u, center + axis_v,
                                   center - axis_v], axis=1), 2, resolution)
    if not patch.empty:
      raster.shade(image, patch,
                   raster.ellipse(patch, center, axis_u, axis_v, blur_px=7 * scale), 0.6)

  # Brows: bands around the brow landmarks, tapering towards the outer ends.
  brow_color = np.minimum(np.asarray(identity.hair_rgb, np.float32) * 0.6 + 0.03,
                          np.asarray(identity.skin_rgb, np.float32) * 0.45)
  for brow, inner_end_first in ((RIGHT_BROW, False), (LEFT_BROW, True)):
    line = points[:, brow]  # left to right in the image
    center_line = raster.smooth_curve(line)
    axis = line[:, -1] - line[:, 0]
    taper = np.linspace(1.0, 0.45, center_line.shape[1]) ** 0.6
    if not inner_end_first:
      taper = taper[::-1]
    unit = axis / np.linalg.norm(axis, axis=1, keepdims=True)
    down = np.stack([-unit[:, 1], unit[:, 0]], axis=1)
    half = 0.5 * identity.brow_thickness * scale[:, None, None] * taper[None, :, None]
    upper, lower = center_line - down[:, None] * half, center_line + down[:, None] * half
    patch = raster.Patch(np.concatenate([upper, lower], axis=1), 2, resolution)
    if not patch.empty:
      alpha = raster.band(patch, line[:, 0], axis, upper, lower)
      raster.paint(image, patch, alpha * 0.9,
                   brow_color * shading[:, patch.rows, patch.cols][..., None])

  eye_direction = direction_from_angles(column["eye_theta"], column["eye_phi"])  # [T, 3]
  for side, eye in enumerate((RIGHT_EYE, LEFT_EYE)):
    _draw_eye(image, identity, model, views, side, eye, points, eye_direction, shading,
              resolution)
  _draw_nose(image, model, views, points, light_camera, resolution)
  _draw_mouth(image, identity, views, points, shading, resolution)


_EYEBALL_DEPTH = 11.0   # eyeball centre behind the eye's corner midpoint (mm)
_EYEBALL_RADIUS = 12.0
_IRIS_RADIUS = 5.8
_PUPIL_RADIUS = 2.2


def _draw_eye(image, identity: Identity, model: geometry.HeadModel, views: geometry.Views,
              side: int, eye, points, eye_direction, shading, resolution: int) -> None:
  """Sclera, iris and pupil (following the gaze) between the lids; lashes, lid line, crease."""
  scale = views.scale
  # Lids from corner to corner, left to right in the image (both eyes list that corner first).
  upper = points[:, eye[:4]]
  lower = points[:, eye[[0, 5, 4, 3]]]
  upper_curve, lower_curve = raster.smooth_curve(upper), raster.smooth_curve(lower)
  left_corner, axis = upper[:, 0], upper[:, -1] - upper[:, 0]
  patch = raster.Patch(np.concatenate([upper_curve, lower_curve], axis=1), 4 * scale.max() + 2,
                       resolution)
  if patch.empty:
    return
  opening = raster.band(patch, left_corner, axis, upper_curve, lower_curve)
  local_shading = shading[:, patch.rows, patch.cols][..., None]
  # Sclera, darker towards the corners.
  middle = raster.per_frame((upper[:, 0, 0] + upper[:, -1, 0]) / 2)
  half_length = raster.per_frame(0.5 * np.linalg.norm(axis, axis=1) + 1e-6)
  along = np.clip(np.abs(patch.x - middle) / half_length, 0, 1)
  sclera = np.array([0.93, 0.90, 0.86], np.float32) * (1.0 - 0.25 * along[..., None] ** 2)
  raster.paint(image, patch, opening, sclera * np.minimum(local_shading * 1.1, 1.0))
  # Iris and pupil: discs on the eyeball, facing the gaze direction.
  eyeball = model.eye_centers[side] + np.array([0.0, 0.0, _EYEBALL_DEPTH])
  iris_center = views.project((eyeball + _EYEBALL_RADIUS * eye_direction)[:, None])[:, 0]
  disc_u = np.cross(np.array([0.0, 1.0, 0.0]), eye_direction)
  disc_u /= np.linalg.norm(disc_u, axis=1, keepdims=True)
  disc_v = np.cross(eye_direction, disc_u)
  u_image, v_image = views.project_vector(disc_u), views.project_vector(disc_v)
  iris_radius = _IRIS_RADIUS * identity.eye_size
  iris = raster.ellipse(patch, iris_center, u_image * iris_radius, v_image * iris_radius) * opening
  ring = raster.ellipse(patch, iris_center, u_image * iris_radius * 0.75,
                        v_image * iris_radius * 0.75, blur_px=1.0)
  iris_color = np.asarray(identity.iris_rgb, np.float32)
  raster.paint(image, patch, iris, iris_color * (0.6 + 0.4 * ring[..., None]) * local_shading)
  pupil_radius = _PUPIL_RADIUS * identity.eye_size
  pupil = raster.ellipse(patch, iris_center, u_image * pupil_radius,
                         v_image * pupil_radius) * opening
  raster.paint(image, patch, pupil, np.array([0.03, 0.02, 0.02], np.float32))
  # Shadow of the upper lid on the eyeball, lashes along its edge, a lower lid line, the crease.
  down = views.project_vector(np.array([0.0, 1.0, 0.0]))[:, None]  # [T, 1, 2]
  lid_shadow = raster.band(patch, left_corner, axis, upper_curve, upper_curve + down * 2.2)
  raster.shade(image, patch, lid_shadow * opening, 0.55)
  lashes = raster.band(patch, left_corner, axis, upper_curve - down * 1.0,
                       upper_curve + down * 0.65)
  raster.paint(image, patch, lashes, np.array([0.06, 0.04, 0.04], np.float32))
  lower_line = raster.band(patch, left_corner, axis, lower_curve - down * 0.4,
                           lower_curve + down * 0.5)
  raster.shade(image, patch, lower_line, 0.7)
  eye_center = points[:, eye[[0, 3]]].mean(axis=1)[:, None]
  lift = views.project_vector(np.array([0.0, -4.5, -1.0]))[:, None]
  crease_curve = eye_center + (upper_curve - eye_center) * 1.08 + lift
  crease = raster.band(patch, left_corner, axis, crease_curve - down * 0.65,
                       crease_curve + down * 0.65)
  raster.shade(image, patch, crease, 0.8)


def _draw_nose(image, model: geometry.HeadModel, views: geometry.Views, points, light_camera,
               resolution: int) -> None:
  """Side walls shaded by their normals, a lit ridge, the tip, alae, nostrils and the shadow
  under the nose."""
  scale = views.scale
  ridge_points = points[:, 27:31]
  ridge = raster.smooth_curve(ridge_points)
  top, axis = ridge_points[:, 0], ridge_points[:, -1] - ridge_points[:, 0]
  front_lambert = views.rotation[:, :, 2] @ -light_camera  # R (0, 0, -1) . light
  for side, sign in enumerate((-1.0, 1.0)):
    wall = raster.smooth_curve(views.project(model.nose_walls[side]))
    normal = views.rotation @ np.array([sign * 0.8, 0.0, -0.6])  # [T, 3]
    brightness = np.clip(0.95 + 0.3 * (normal @ light_camera - front_lambert), 0.6, 1.05)
    patch = raster.Patch(np.concatenate([ridge, wall], axis=1), 2, resolution)
    if patch.empty:
      continue
    # For an axis pointing down the image, t grows towards the image's left: the subject's right
    # wall (image left) lies at t > 0 from the ridge.
    upper, lower = (ridge, wall) if side == 0 else (wall, ridge)
    alpha = raster.band(patch, top, axis, upper, lower, softness_px=2.0 * scale)
    raster.shade(image, patch, alpha, brightness)
    # A wall seen edge-on: the nose's silhouette against the cheek.
    edge_on = raster.per_frame(normal[:, 2] > -0.45)
    raster.shade(image, patch, raster.stroke(patch, top, axis, wall, 0.7 * scale) * edge_on, 0.78)
  patch = raster.Patch(ridge, 2, resolution)
  if not patch.empty:
    raster.shade(image, patch,
                 raster.stroke(patch, top, axis, ridge, 1.5 * scale, softness_px=scale), 1.1)
  tip, base_middle = points[:, 30], points[:, 33]
  patch = raster.Patch(np.concatenate([points[:, 30:36], points[:, [50, 52]]], axis=1),
                       5 * scale.max() + 2, resolution)
  if patch.empty:
    return
  down = views.project_vector(np.array([0.0, 1.0, 0.0]))
  right = views.project_vector(np.array([1.0, 0.0, 0.0]))
  under = raster.ellipse(patch, base_middle + down * 4.0, right * 13.0, down * 4.0,
                         blur_px=3 * scale)
  raster.shade(image, patch, under, 0.68)
  for ala in (31, 35):
    center = points[:, ala] * 0.75 + base_middle * 0.25 - down * 2.5
    raster.shade(image, patch,
                 raster.ellipse(patch, center, right * 5.5, down * 5.0, blur_px=2 * scale), 0.82)
  nostrils = views.project(model.nostrils)
  for side in range(2):
    raster.shade(image, patch, raster.ellipse(patch, nostrils[:, side], right * 3.6, down * 1.8,
                                              blur_px=0.6 * scale), 0.35)
  highlight = raster.ellipse(patch, tip - down * 2.0, right * 4.0, down * 3.5, blur_px=2.5 * scale)
  raster.shade(image, patch, highlight, 1.12)


def _draw_mouth(image, identity: Identity, views: geometry.Views, points, shading,
                resolution: int) -> None:
  """Lips, the mouth interior (a dark line when closed) with upper teeth, corner creases and the
  shadow under the lower lip."""
  scale = views.scale
  left, right = points[:, 48], points[:, 54]
  axis = right - left
  outer_upper = raster.smooth_curve(points[:, 48:55])
  outer_lower = raster.smooth_curve(points[:, [48, 59, 58, 57, 56, 55, 54]])
  inner_upper = raster.smooth_curve(points[:, [48, 60, 61, 62, 63, 64, 54]])
  inner_lower = raster.smooth_curve(points[:, [48, 60, 67, 66, 65, 64, 54]])
  down = views.project_vector(np.array([0.0, 1.0, 0.0]))
  patch = raster.Patch(np.concatenate([outer_upper, outer_lower], axis=1), 6 * scale.max() + 2,
                       resolution)
  if patch.empty:
    return
  local_shading = shading[:, patch.rows, patch.cols][..., None]
  chin_shadow = raster.ellipse(patch, points[:, 57] + down * 5.0, axis * 0.3, down * 4.0,
                               blur_px=3 * scale)
  raster.shade(image, patch, chin_shadow, 0.85)
  lip_color = np.asarray(identity.lip_rgb, np.float32)
  lips = raster.band(patch, left, axis, outer_upper, outer_lower)
  raster.paint(image, patch, lips, lip_color * local_shading)
  raster.shade(image, patch, raster.band(patch, left, axis, outer_upper, inner_upper), 0.85)
  lower_highlight = raster.band(patch, left, axis,
                                outer_lower - down[:, None] * (4.0 * identity.lip_thickness),
                                outer_lower - down[:, None] * (1.5 * identity.lip_thickness))
  raster.shade(image, patch, lower_highlight * lips, 1.1)
  # The interior: at least a dark line 1 mm thick, with the upper teeth below the upper lip.
  line = down[:, None] * 0.5
  interior = raster.band(patch, left, axis, inner_upper - line, inner_lower + line)
  raster.paint(image, patch, interior, np.array([0.16, 0.04, 0.04], np.float32) * local_shading)
  gap_mm = np.linalg.norm(points[:, 66] - points[:, 62], axis=1) / scale
  teeth_mm = np.minimum(gap_mm * 0.45, 5.0)
  teeth = raster.band(patch, left, axis, inner_upper,
                      inner_upper + down[:, None] * teeth_mm[:, None, None])
  middle = (left + right) / 2
  front_teeth = raster.ellipse(patch, middle, axis * 0.36, down * 25.0, blur_px=2.0 * scale)
  raster.paint(image, patch, teeth * interior * front_teeth * raster.per_frame(teeth_mm > 0.6),
               np.array([0.75, 0.72, 0.66], np.float32) * local_shading)
  for corner in (left, right):
    raster.shade(image, patch,
                 raster.ellipse(patch, corner, down * 1.6, axis * 0.05, blur_px=scale), 0.6)
