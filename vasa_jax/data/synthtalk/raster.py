"""Rasterisation for SynthTalk's renderer (`vasa_jax.data.synthtalk.render`), pure numpy.

Soft (anti-aliased) coverage of curves, bands, strokes and ellipses on the pixel grids of T
frames, alpha painting and shading, the ray casting of the head's ellipsoids, and the textures
of an identity (skin albedo, background; cached) with their sampling.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np

from vasa_jax.data.synthtalk import geometry


# ----------------------------------------------------------------------------------------------
# Rasterisation helpers: soft (anti-aliased) coverage in [0, 1] on pixel grids of T frames.
# Per-frame parameters are arrays with a leading T axis.
# ----------------------------------------------------------------------------------------------
def per_frame(values) -> np.ndarray:
  """[T] -> float32 [T, 1, 1], to broadcast against [T, h, w] grids."""
  return np.asarray(values, np.float32).reshape(-1, 1, 1)


def coverage(signed_distance_px):
  """Coverage of a pixel whose centre is `signed_distance_px` inside an edge."""
  return np.clip(signed_distance_px + 0.5, 0.0, 1.0)


def smoothstep(x, lo, hi):
  t = np.clip((x - lo) / (hi - lo), 0.0, 1.0)
  return t * t * (3.0 - 2.0 * t)


CURVE_SAMPLES = 6  # per segment of a Catmull-Rom curve
_CR_T = np.linspace(0.0, 1.0, CURVE_SAMPLES, endpoint=False)
_CR_BASIS = 0.5 * np.stack([
    -_CR_T ** 3 + 2 * _CR_T ** 2 - _CR_T,
    3 * _CR_T ** 3 - 5 * _CR_T ** 2 + 2,
    -3 * _CR_T ** 3 + 4 * _CR_T ** 2 + _CR_T,
    _CR_T ** 3 - _CR_T ** 2], axis=1)  # [samples, 4]


def smooth_curve(points: np.ndarray, closed: bool = False) -> np.ndarray:
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


def batched_interp(x: np.ndarray, xp: np.ndarray, fp: np.ndarray) -> np.ndarray:
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


class Patch:
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


def _local_frame(patch: Patch, origin: np.ndarray, axis: np.ndarray):
  """Unit axes and the pixels' coordinates (s along `axis`, t across it) from `origin`."""
  axis = axis / np.maximum(np.linalg.norm(axis, axis=-1, keepdims=True), 1e-6)
  across = np.stack([-axis[:, 1], axis[:, 0]], axis=1)
  dx, dy = patch.x - per_frame(origin[:, 0]), patch.y - per_frame(origin[:, 1])
  s = dx * per_frame(axis[:, 0]) + dy * per_frame(axis[:, 1])
  t = dx * per_frame(across[:, 0]) + dy * per_frame(across[:, 1])
  return axis, across, s, t


def band(patch: Patch, origin: np.ndarray, axis: np.ndarray, upper: np.ndarray,
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
  inside = np.minimum(t - batched_interp(s, upper_s, upper_t),
                      batched_interp(s, lower_s, lower_t) - t)
  start = per_frame(np.maximum(upper_s[:, 0], lower_s[:, 0]))
  end = per_frame(np.minimum(upper_s[:, -1], lower_s[:, -1]))
  distance = np.minimum(inside, np.minimum(s - start, end - s))
  softness = per_frame(np.broadcast_to(softness_px, (len(origin),)))
  return np.clip(distance / np.maximum(softness, 1.0) + np.where(softness > 1.0, 0.0, 0.5),
                 0.0, 1.0)


def stroke(patch: Patch, origin, axis, curve: np.ndarray, half_width_px,
           softness_px=1.0) -> np.ndarray:
  """Coverage of a line of half width `half_width_px` ([T] or scalar) along `curve` [T, K, 2]."""
  unit = axis / np.maximum(np.linalg.norm(axis, axis=-1, keepdims=True), 1e-6)
  offset = np.stack([-unit[:, 1], unit[:, 0]], axis=1) * np.reshape(half_width_px, (-1, 1))
  return band(patch, origin, axis, curve - offset[:, None], curve + offset[:, None],
              softness_px)


def ellipse(patch: Patch, center: np.ndarray, axis_u: np.ndarray, axis_v: np.ndarray,
            blur_px=0.0) -> np.ndarray:
  """Coverage [T, h, w] of the 2D ellipses {center + a u + b v : a^2 + b^2 <= 1}.

  `center`, `axis_u`, `axis_v` are [T, 2] image points and vectors. With `blur_px` > 0 ([T] or
  scalar) the edge is a linear ramp that wide inwards (soft shadows and highlights).
  """
  u, v = np.broadcast_to(axis_u, center.shape), np.broadcast_to(axis_v, center.shape)
  det = u[:, 0] * v[:, 1] - v[:, 0] * u[:, 1]
  valid = np.abs(det) > 1e-6
  det = np.where(valid, det, 1.0)
  dx, dy = patch.x - per_frame(center[:, 0]), patch.y - per_frame(center[:, 1])
  a = (dx * per_frame(v[:, 1]) - dy * per_frame(v[:, 0])) / per_frame(det)
  b = (dy * per_frame(u[:, 0]) - dx * per_frame(u[:, 1])) / per_frame(det)
  half_minor = np.minimum(np.linalg.norm(u, axis=1), np.linalg.norm(v, axis=1))
  edge = (1.0 - np.sqrt(a * a + b * b)) * per_frame(half_minor)
  blur = per_frame(np.broadcast_to(blur_px, (len(center),)))
  coverage = np.clip(edge / np.maximum(blur, 1.0) + np.where(blur > 0, 0.0, 0.5), 0.0, 1.0)
  return coverage * per_frame(valid)


def paint(image: np.ndarray, patch: Patch, alpha: np.ndarray, color) -> None:
  """Alpha-blends `color` (broadcastable to [T, h, w, 3]) into the patch of `image`, in place."""
  region = image[:, patch.rows, patch.cols]
  region += (np.asarray(color, np.float32) - region) * alpha[..., None]


def shade(image: np.ndarray, patch: Patch, alpha: np.ndarray, factor) -> None:
  """Multiplies the patch by 1 - alpha (1 - factor): darkens (factor < 1) or lightens.

  `factor` is a scalar or one value per frame ([T]).
  """
  factor = np.asarray(factor, np.float32)
  if factor.ndim:
    factor = per_frame(factor)
  image[:, patch.rows, patch.cols] *= (1.0 - alpha * (1.0 - factor))[..., None]


# ----------------------------------------------------------------------------------------------
# Ray casting of the head surfaces (scaled orthographic camera, one ray per pixel).
# ----------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Hit:
  coverage: np.ndarray  # [T, R, R] anti-aliased silhouette
  inside: np.ndarray    # [T, R, R] distance inside the silhouette, millimetres (< 0 outside)
  depth: np.ndarray     # [T, R, R] camera z of the front hit (1e6 where missed)
  point: list           # 3 x [T, R, R] head-frame hit point
  light: np.ndarray     # [T, R, R] Lambert factor n.l in [-1, 1] (0 where missed)
  gloss: np.ndarray     # [T, R, R] n.h with the Blinn half vector (0 where missed)


def cast(ellipsoid: geometry.Ellipsoid, views: geometry.Views, grid_x, grid_y,
         light_head: np.ndarray, half_head: np.ndarray) -> Hit:
  """Intersects each pixel's viewing ray with an ellipsoid (head frame)."""
  rows = views.rotation  # camera point (X, Y, t) is head point X r0 + Y r1 + t r2
  inv_axes = 1.0 / ellipsoid.axes
  along_x, along_y, along_t = rows[:, 0] * inv_axes, rows[:, 1] * inv_axes, rows[:, 2] * inv_axes
  offset = -ellipsoid.center * inv_axes
  cam_x = (grid_x - per_frame(views.origin[:, 0])) / per_frame(views.scale)  # [T, 1, R]
  cam_y = (grid_y - per_frame(views.origin[:, 1])) / per_frame(views.scale)  # [T, R, 1]
  # The scaled ray o' + t d' with o' = X along_x + Y along_y + offset and d' = along_t hits the
  # unit sphere where A t^2 + B t + C = 0: A = |d'|^2, B = 2 o'.d', C = |o'|^2 - 1.
  quad_a = per_frame(np.sum(along_t * along_t, axis=1))
  quad_b = 2 * (cam_x * per_frame(np.sum(along_x * along_t, axis=1))
                + (cam_y * per_frame(np.sum(along_y * along_t, axis=1))
                   + per_frame(along_t @ offset)))
  o = [cam_x * per_frame(along_x[:, i]) + (cam_y * per_frame(along_y[:, i]) + float(offset[i]))
       for i in range(3)]
  disc = quad_b * quad_b - 4.0 * quad_a * (o[0] * o[0] + o[1] * o[1] + o[2] * o[2] - 1.0)
  # Distance inside the silhouette, first order: disc / (8 A^1.5) millimetres.
  inside = disc / (8.0 * quad_a ** 1.5)
  hit = disc > 0
  t = (-quad_b - np.sqrt(np.maximum(disc, 0.0))) / (2.0 * quad_a)
  point = [cam_x * per_frame(rows[:, 0, i]) + cam_y * per_frame(rows[:, 1, i])
           + t * per_frame(rows[:, 2, i]) for i in range(3)]
  normal = [(o[i] + t * per_frame(along_t[:, i])) * np.float32(inv_axes[i]) for i in range(3)]
  inv_norm = 1.0 / (np.sqrt(normal[0] ** 2 + normal[1] ** 2 + normal[2] ** 2) + 1e-9)

  def dot(vectors):
    value = sum(normal[i] * per_frame(vectors[:, i]) for i in range(3)) * inv_norm
    return np.where(hit, value, 0.0)

  return Hit(coverage(inside * per_frame(views.scale)), inside,
             np.where(hit, t, 1e6), point, dot(light_head), dot(half_head))


# ----------------------------------------------------------------------------------------------
# Textures of an identity (cached: a clip renders one identity many times).
# ----------------------------------------------------------------------------------------------
# Texture maps cover this head-frame rectangle (x0, x1, y0, y1), in millimetres.
_TEXTURE_EXTENT = (-100.0, 100.0, -190.0, 110.0)


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
def skin_texture_cached(identity_bytes: bytes, size: int) -> np.ndarray:
  """Albedo multiplier [size, size] over _TEXTURE_EXTENT: blotches and freckles."""
  identity = geometry.Identity.from_array(np.frombuffer(identity_bytes, np.float32))
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
def background_cached(identity_bytes: bytes, resolution: int) -> np.ndarray:
  identity = geometry.Identity.from_array(np.frombuffer(identity_bytes, np.float32))
  rng = np.random.default_rng(int(identity.texture_seed) + 1)
  top, bottom = np.array(identity.background_top_rgb), np.array(identity.background_bottom_rgb)
  v = np.linspace(0.0, 1.0, resolution)[:, None, None]
  image = top * (1.0 - v) + bottom * v
  noise = _resize_bilinear(_smooth_noise(rng, 32, 2.5), resolution)
  image = image * (1.0 + 0.08 * noise[..., None])
  u = np.linspace(-1.0, 1.0, resolution)
  vignette = 1.0 - 0.18 * (u[:, None] ** 2 + u[None, :] ** 2)
  return np.clip(image * vignette[..., None], 0.0, 1.0).astype(np.float32)


def sample_texture(texture: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
  """Nearest-texel lookup of a head-frame texture at head-frame coordinates (mm)."""
  x0, x1, y0, y1 = _TEXTURE_EXTENT
  size = texture.shape[0]
  col = np.clip(((x - x0) * (size / (x1 - x0))).astype(np.int32), 0, size - 1)
  row = np.clip(((y - y0) * (size / (y1 - y0))).astype(np.int32), 0, size - 1)
  return texture.reshape(-1)[row * size + col]
