"""FVD25 and FID: Frechet distances between Gaussians fitted to network features of two sets.

  d^2 = ||mu_1 - mu_2||^2 + tr(S_1) + tr(S_2) - 2 tr((S_1 S_2)^(1/2)),
computed in float64. tr((S_1 S_2)^(1/2)) is taken as the sum of the square roots of the
eigenvalues of S_1^(1/2) S_2 S_1^(1/2) (symmetric positive semi-definite, the same eigenvalues as
S_1 S_2), or, with fewer samples than dimensions, as the sum of the singular values of the
samples' cross products (`frechet_distance`); both equal the reference implementations' trace of
`scipy.linalg.sqrtm(S_1 @ S_2)` without its complex round-off; a set against itself gives ~0.

FVD25 (StyleGAN-V's protocol): each video is cut into consecutive non-overlapping 25-frame clips
(25 fps), each clip's I3D logits (`vasa_jax.models.i3d`, 400-d) are its features, and the
covariance is the biased one (divided by N), as StyleGAN-V's `FeatureStats.get_mean_cov`.
FID (pytorch-fid's protocol): frames' InceptionV3 pool3 features (`vasa_jax.models.inception`,
2048-d), covariance `np.cov` (divided by N - 1); at most `FID_FRAMES_PER_VIDEO` evenly spaced
frames of each video are used.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import numpy as np

from vasa_jax.evaluators import batching
from vasa_jax.models import i3d as i3d_lib
from vasa_jax.models import inception as inception_lib

FVD_CLIP_FRAMES = 25
FID_FRAMES_PER_VIDEO = 25
I3D_BATCH_SIZE = 2
INCEPTION_BATCH_SIZE = 16


def feature_statistics(features: np.ndarray, ddof: int) -> tuple[np.ndarray, np.ndarray]:
  """(mean [D], covariance [D, D]) in float64 of features [N, D] (covariance / (N - ddof))."""
  features = np.asarray(features, np.float64)
  if features.ndim != 2 or len(features) <= ddof:
    raise ValueError(f"need [N > {ddof}, D] features, got shape {features.shape}")
  mean = features.mean(axis=0)
  centred = features - mean
  return mean, centred.T @ centred / (len(features) - ddof)


def _symmetric_sqrt(matrix: np.ndarray) -> np.ndarray:
  values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
  return (vectors * np.sqrt(np.maximum(values, 0.0))) @ vectors.T


def frechet_distance_from_statistics(mean_1: np.ndarray, covariance_1: np.ndarray,
                                     mean_2: np.ndarray, covariance_2: np.ndarray) -> float:
  """The Frechet distance d^2 between N(mean_1, covariance_1) and N(mean_2, covariance_2)."""
  mean_1, mean_2 = np.asarray(mean_1, np.float64), np.asarray(mean_2, np.float64)
  covariance_1 = np.asarray(covariance_1, np.float64)
  covariance_2 = np.asarray(covariance_2, np.float64)
  root_1 = _symmetric_sqrt(covariance_1)
  product = root_1 @ covariance_2 @ root_1
  trace_sqrt = np.sqrt(np.maximum(np.linalg.eigvalsh((product + product.T) / 2), 0.0)).sum()
  difference = mean_1 - mean_2
  return float(difference @ difference + np.trace(covariance_1) + np.trace(covariance_2)
               - 2.0 * trace_sqrt)


def frechet_distance(features_1: np.ndarray, features_2: np.ndarray, ddof: int) -> float:
  """d^2 between Gaussians fitted to features [N1, D] and [N2, D] (covariances / (N - ddof)).

  With no more samples than dimensions (a few clips' 400-d or 2048-d features) the covariances
  are S_i = X_i^T X_i / (N_i - ddof) of the centred features X_i, and tr((S_1 S_2)^(1/2)) is the
  sum of the singular values of X_2 X_1^T / sqrt((N_1 - ddof)(N_2 - ddof)): an N1 x N2 problem
  instead of D x D. Otherwise the covariances are formed (`frechet_distance_from_statistics`).
  """
  features_1 = np.asarray(features_1, np.float64)
  features_2 = np.asarray(features_2, np.float64)
  if max(len(features_1), len(features_2)) > features_1.shape[-1]:
    return frechet_distance_from_statistics(*feature_statistics(features_1, ddof),
                                            *feature_statistics(features_2, ddof))
  for features in (features_1, features_2):
    if features.ndim != 2 or len(features) <= ddof:
      raise ValueError(f"need [N > {ddof}, D] features, got shape {features.shape}")
  centred_1 = features_1 - features_1.mean(axis=0)
  centred_2 = features_2 - features_2.mean(axis=0)
  scale_1, scale_2 = len(features_1) - ddof, len(features_2) - ddof
  trace_sqrt = np.linalg.svd(centred_2 @ centred_1.T, compute_uv=False).sum() / np.sqrt(
      scale_1 * scale_2)
  difference = features_1.mean(axis=0) - features_2.mean(axis=0)
  return float(difference @ difference + (centred_1 ** 2).sum() / scale_1
               + (centred_2 ** 2).sum() / scale_2 - 2.0 * trace_sqrt)


def fvd_clips(frames: np.ndarray, clip_frames: int = FVD_CLIP_FRAMES) -> np.ndarray:
  """Consecutive non-overlapping clips [N, clip_frames, H, W, 3] of a video [T, H, W, 3]."""
  count = len(frames) // clip_frames
  return np.asarray(frames[:count * clip_frames]).reshape(
      (count, clip_frames) + tuple(frames.shape[1:]))


def evenly_spaced(frames: np.ndarray, count: int = FID_FRAMES_PER_VIDEO) -> np.ndarray:
  """At most `count` evenly spaced frames of a video."""
  if len(frames) <= count:
    return np.asarray(frames)
  return np.asarray(frames)[np.round(np.linspace(0, len(frames) - 1, count)).astype(int)]


class FeatureNetwork:
  """A frozen network's features, jitted once per batch shape."""

  def __init__(self, model: nn.Module, variables: Any, batch_size: int):
    self.variables = jax.device_put(nn.unbox(variables))
    self.batch_size = batch_size
    self._apply = jax.jit(model.apply)

  def __call__(self, inputs: np.ndarray) -> np.ndarray:
    return batching.batched(functools.partial(self._apply, self.variables), inputs,
                            self.batch_size).astype(np.float64)


def i3d_features(variables: Any, model: i3d_lib.I3D = i3d_lib.I3D(),
                 batch_size: int = I3D_BATCH_SIZE) -> FeatureNetwork:
  """Clips uint8 [N, T, H, W, 3] -> I3D logits [N, 400] (resized to 224 inside)."""
  return FeatureNetwork(model, variables, batch_size)


def inception_features(variables: Any,
                       model: inception_lib.FIDInceptionV3 = inception_lib.FIDInceptionV3(),
                       batch_size: int = INCEPTION_BATCH_SIZE) -> FeatureNetwork:
  """Frames float [N, H, W, 3] in [0, 1] -> pool3 features [N, 2048] (resized to 299 inside)."""
  return FeatureNetwork(model, variables, batch_size)


def fvd(generated_features: np.ndarray, reference_features: np.ndarray) -> float:
  """FVD from I3D clip features of the two sets (biased covariances, as StyleGAN-V)."""
  return frechet_distance(generated_features, reference_features, ddof=0)


def fid(generated_features: np.ndarray, reference_features: np.ndarray) -> float:
  """FID from Inception frame features of the two sets (unbiased covariances, as pytorch-fid)."""
  return frechet_distance(generated_features, reference_features, ddof=1)
