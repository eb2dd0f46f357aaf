"""CSIM: ArcFace cosine similarity between the source photo and the generated frames.

Faces are aligned as insightface aligns them for ArcFace (`face_align.norm_crop`): the similarity
transform (least squares) taking five points (eye centres, nose tip, mouth corners; here from the
tracker's 68 landmarks: means of 36-41 and 42-47, 30, 48, 54) onto insightface's 112 x 112
template, the frame warped bilinearly with black outside. The embeddings are ArcFace IResNet
outputs (`vasa_jax.models.iresnet`, RGB in [-1, 1]); CSIM of a clip = mean over its scored frames of
cos(embedding(source), embedding(frame)). At most `MAX_FRAMES` evenly spaced frames with a face
are scored per clip (ArcFace r100 costs ~12 GFLOPs a frame).
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import numpy as np

from vasa_jax.evaluators import batching
from vasa_jax.evaluators import landmarks as landmarks_lib
from vasa_jax.models import iresnet

# insightface's ArcFace alignment template (`arcface_dst`) for 112 x 112 crops.
ARCFACE_TEMPLATE = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                             [41.5493, 92.3655], [70.7299, 92.2041]])
ALIGNED_SIZE = iresnet.INPUT_SIZE  # 112
MAX_FRAMES = 50
BATCH_SIZE = 16


def five_points(landmarks: np.ndarray) -> np.ndarray:
  """[68, 2] landmarks -> [5, 2]: image-left eye, image-right eye, nose tip, mouth corners."""
  landmarks = np.asarray(landmarks, np.float64)
  return np.stack([landmarks[36:42].mean(0), landmarks[42:48].mean(0), landmarks[30],
                   landmarks[48], landmarks[54]])


def align_face(image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
  """uint8 RGB [H, W, 3] + its face's 68 landmarks -> uint8 [112, 112, 3] ArcFace crop."""
  scale, rotation, translation = landmarks_lib.similarity_transform(five_points(landmarks),
                                                                    ARCFACE_TEMPLATE)
  # Each crop pixel centre maps back into the image by the inverse transform.
  grid = np.stack(np.meshgrid(np.arange(ALIGNED_SIZE), np.arange(ALIGNED_SIZE), indexing="xy"),
                  -1).reshape(-1, 2).astype(np.float64)  # [112 * 112, 2] (x, y)
  source = (grid - translation) @ rotation / scale  # R^T (p - t) / s, row vectors
  xs, ys = source[:, 0], source[:, 1]
  height, width = image.shape[:2]
  x0, y0 = np.floor(xs).astype(int), np.floor(ys).astype(int)
  fx, fy = xs - x0, ys - y0
  pixels = image.astype(np.float64)
  output = np.zeros((len(xs), 3))
  for dx, dy, weight in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)),
                         (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
    x, y = x0 + dx, y0 + dy
    inside = (x >= 0) & (x < width) & (y >= 0) & (y < height)  # black outside (cv2's border)
    output[inside] += weight[inside, None] * pixels[y[inside], x[inside]]
  return np.clip(np.round(output), 0, 255).astype(np.uint8).reshape(ALIGNED_SIZE, ALIGNED_SIZE, 3)


def scored_frames(found: np.ndarray, max_frames: int = MAX_FRAMES) -> np.ndarray:
  """Indices of at most `max_frames` evenly spaced frames among those with a face."""
  candidates = np.flatnonzero(found)
  if len(candidates) <= max_frames:
    return candidates
  return candidates[np.round(np.linspace(0, len(candidates) - 1, max_frames)).astype(int)]


class ArcFaceEmbedder:
  """L2-normalised ArcFace embeddings of aligned crops, jitted once per batch shape."""

  def __init__(self, variables: Any, model: iresnet.IResNet, batch_size: int = BATCH_SIZE):
    self.variables = jax.device_put(nn.unbox(variables))
    self.batch_size = batch_size
    self._embed = jax.jit(lambda v, images: model.apply(v, images)[0])

  def __call__(self, crops: np.ndarray) -> np.ndarray:
    """uint8 [N, 112, 112, 3] -> float64 [N, D] unit vectors."""
    images = np.asarray(crops, np.float32) / 127.5 - 1.0
    embeddings = batching.batched(functools.partial(self._embed, self.variables), images,
                                  self.batch_size).astype(np.float64)
    return embeddings / np.linalg.norm(embeddings, axis=-1, keepdims=True)


def csim(embedder: ArcFaceEmbedder, source_image: np.ndarray, source_landmarks: np.ndarray,
         frames: np.ndarray, landmarks: np.ndarray, found: np.ndarray) -> float:
  """Mean cosine similarity of the source face and the generated faces (NaN without faces)."""
  indices = scored_frames(found, MAX_FRAMES)
  if not len(indices):
    return float("nan")
  crops = np.stack([align_face(source_image, source_landmarks)]
                   + [align_face(frames[t], landmarks[t]) for t in indices])
  embeddings = embedder(crops)
  return float((embeddings[1:] @ embeddings[0]).mean())
