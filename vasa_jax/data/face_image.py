"""Image operations of the face tracker: square crops and their coordinates, irises, sharpness.

Pixel convention everywhere: pixel (row i, column j) has its centre at (x, y) = (j, i), as in dlib's
landmark output.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image
from scipy import ndimage

# Side in pixels to which the face region (one face size square) is resampled before measuring
# sharpness, so that the Laplacian variance does not depend on the source resolution.
SHARPNESS_SIZE = 128
# Sampling density of the eye patch searched for the iris: samples per eye width (corner to corner).
_EYE_PATCH_SAMPLES_PER_WIDTH = 32
# The iris search ignores this band (fraction of the eye width) below the upper lid landmarks,
# where the lashes draw a dark line that would pull the iris estimate up.
UPPER_LID_MARGIN = 0.08


def to_gray(frame: np.ndarray) -> np.ndarray:
  """RGB uint8 [H, W, 3] -> grey uint8 [H, W]."""
  return np.asarray(Image.fromarray(frame).convert("L"))


def bilinear_sample(image: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
  """Samples a 2-D image at float pixel positions (pixel centres at integers, edge padding)."""
  height, width = image.shape
  xs = np.clip(xs, 0, width - 1)
  ys = np.clip(ys, 0, height - 1)
  x0 = np.minimum(np.floor(xs).astype(np.int64), width - 2 if width > 1 else 0)
  y0 = np.minimum(np.floor(ys).astype(np.int64), height - 2 if height > 1 else 0)
  x1 = np.minimum(x0 + 1, width - 1)
  y1 = np.minimum(y0 + 1, height - 1)
  fx, fy = xs - x0, ys - y0
  image = image.astype(np.float32)
  top = image[y0, x0] * (1 - fx) + image[y0, x1] * fx
  bottom = image[y1, x0] * (1 - fx) + image[y1, x1] * fx
  return top * (1 - fy) + bottom * fy


def crop_square(image: np.ndarray, box: np.ndarray, size: int) -> np.ndarray:
  """Resamples the square `box` = (x_center, y_center, side) of `image` to `size` x `size`.

  Bilinear (antialiased when shrinking, by Pillow); outside the image the edge pixels repeat.
  Crop pixel j's centre samples source x = x_center - side / 2 + (j + 0.5) * side / size (pixel
  centres at integer coordinates in both images); `source_to_crop` is the inverse.
  """
  x_center, y_center, side = (float(v) for v in box)
  height, width = image.shape[:2]
  # Box edges in Pillow's coordinates, where pixel k spans [k, k + 1].
  left, top = x_center - side / 2 + 0.5, y_center - side / 2 + 0.5
  margin = int(math.ceil(side / size)) + 2
  x0, y0 = int(math.floor(left)) - margin, int(math.floor(top)) - margin
  x1, y1 = int(math.ceil(left + side)) + margin, int(math.ceil(top + side)) + margin
  inner = image[max(y0, 0):min(y1, height), max(x0, 0):min(x1, width)]
  if inner.size == 0:  # the box lies wholly outside the image
    window = image[np.ix_(np.clip(np.arange(y0, y1), 0, height - 1),
                          np.clip(np.arange(x0, x1), 0, width - 1))]
  else:
    padding = ((max(0, -y0), max(0, y1 - height)), (max(0, -x0), max(0, x1 - width)))
    window = np.pad(inner, padding + ((0, 0),) * (image.ndim - 2), mode="edge")
  resized = Image.fromarray(np.ascontiguousarray(window)).resize(
      (size, size), Image.Resampling.BILINEAR,
      box=(left - x0, top - y0, left - x0 + side, top - y0 + side))
  return np.asarray(resized)


def source_to_crop(points: np.ndarray, box: np.ndarray, size: int) -> np.ndarray:
  """Source pixel coordinates [..., 2] -> crop pixel coordinates for `crop_square(., box, size)`."""
  x_center, y_center, side = box[..., 0:1], box[..., 1:2], box[..., 2:3]
  origin = np.concatenate([x_center, y_center], -1) - side / 2
  return (points - origin[..., None, :]) * (size / side[..., None, :]) - 0.5


def smooth_crop_boxes(boxes: np.ndarray, sigma_frames: float) -> np.ndarray:
  """Gaussian smoothing over time of [T, 3] boxes (centre linearly, side in log space)."""
  if sigma_frames <= 0 or len(boxes) < 2:
    return boxes
  smoothed = np.empty_like(boxes)
  smoothed[:, :2] = ndimage.gaussian_filter1d(boxes[:, :2], sigma_frames, axis=0, mode="nearest")
  smoothed[:, 2] = np.exp(ndimage.gaussian_filter1d(np.log(boxes[:, 2]), sigma_frames,
                                                    mode="nearest"))
  return smoothed


def point_in_polygon(xs: np.ndarray, ys: np.ndarray, polygon: np.ndarray) -> np.ndarray:
  """Even-odd rule: which points (xs, ys) lie inside the closed polygon [K, 2]."""
  inside = np.zeros(xs.shape, bool)
  for (xa, ya), (xb, yb) in zip(polygon, np.roll(polygon, -1, axis=0)):
    crosses = (ya > ys) != (yb > ys)
    x_cross = xa + (ys - ya) * (xb - xa) / (yb - ya + 1e-12)
    inside ^= crosses & (xs < x_cross)
  return inside


def locate_pupil(gray: np.ndarray, eye: np.ndarray, iris_radius: float) -> np.ndarray:
  """Iris centre [2] in image pixels, found inside one eye's 6-landmark polygon.

  The eye is sampled on a grid aligned with its corners, within the landmark polygon whose upper
  lid edge is lowered by UPPER_LID_MARGIN x eye width (the dark lash line runs along it). Samples
  darker than the 40th percentile of the eye weigh by how much darker they are (the iris covers
  ~40-50% of an open eye); their centroid is refined by recomputing it within an iris-sized disc
  around the previous estimate, which discounts the shadows in the eye corners.

  Args:
    gray: [H, W] grey image.
    eye: [6, 2] the eye's landmarks (dlib order: corner, two upper lid, corner, two lower lid).
    iris_radius: iris radius in pixels.

  Returns:
    The iris centre; the midpoint of the eye corners when the eye shows no dark region.
  """
  corner_a, corner_b = eye[0], eye[3]
  eye_centre = 0.5 * (corner_a + corner_b)
  eye_width = float(np.linalg.norm(corner_b - corner_a))
  if eye_width < 2.0:
    return eye_centre
  axis = (corner_b - corner_a) / eye_width
  normal = np.array([-axis[1], axis[0]])  # points down the image for an upright face
  step = eye_width / _EYE_PATCH_SAMPLES_PER_WIDTH
  along = np.arange(0.0, eye_width, step)
  across = np.arange(-0.4 * eye_width, 0.4 * eye_width, step)
  grid_u, grid_v = np.meshgrid(along, across)
  relative = eye - corner_a
  polygon = np.stack([relative @ axis, relative @ normal], -1)
  polygon[1:3, 1] += UPPER_LID_MARGIN * eye_width
  inside = point_in_polygon(grid_u, grid_v, polygon)
  if inside.sum() < 4:
    return eye_centre
  values = bilinear_sample(gray, corner_a[0] + grid_u * axis[0] + grid_v * normal[0],
                           corner_a[1] + grid_u * axis[1] + grid_v * normal[1])
  darkness = np.where(inside, np.maximum(np.percentile(values[inside], 40) - values, 0.0), 0.0)
  if darkness.sum() <= 0:
    return eye_centre
  u = (darkness * grid_u).sum() / darkness.sum()
  v = (darkness * grid_v).sum() / darkness.sum()
  for _ in range(2):
    in_disc = darkness * ((grid_u - u) ** 2 + (grid_v - v) ** 2 <= iris_radius ** 2)
    if in_disc.sum() <= 0:
      break
    u = (in_disc * grid_u).sum() / in_disc.sum()
    v = (in_disc * grid_v).sum() / in_disc.sum()
  return corner_a + u * axis + v * normal


def face_sharpness(gray: np.ndarray, center: np.ndarray, face_size: float) -> float:
  """Variance of the Laplacian of the face square, resampled to SHARPNESS_SIZE pixels."""
  patch = crop_square(gray, np.array([center[0], center[1], face_size]),
                      SHARPNESS_SIZE).astype(np.float32)
  laplacian = (patch[:-2, 1:-1] + patch[2:, 1:-1] + patch[1:-1, :-2] + patch[1:-1, 2:]
               - 4.0 * patch[1:-1, 1:-1])
  return float(laplacian.var())
