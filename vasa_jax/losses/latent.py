"""Stage-1 loss terms that need no pretrained network (pure functions, float32 results).

The perceptual, identity and adversarial terms live beside their networks
(`vasa_jax.models.perceptual`, `vasa_jax.models.discriminator`); the trainer
(`vasa_jax.trainers.latent`) combines everything with the weights of `config.loss`.
"""

from typing import Optional, Sequence

import jax
import jax.numpy as jnp


def l1(prediction: jax.Array, target: jax.Array) -> jax.Array:
  """Mean absolute difference, float32 scalar."""
  return jnp.mean(jnp.abs(prediction.astype(jnp.float32) - target.astype(jnp.float32)))


def masked_l1(prediction: jax.Array, target: jax.Array, mask: jax.Array) -> jax.Array:
  """Mean absolute difference over the pixels where `mask` [B, S, S] is 1, float32 scalar.

  Images are [B, S, S, C]; a batch whose masks are all 0 gives 0.
  """
  difference = jnp.abs(prediction.astype(jnp.float32) - target.astype(jnp.float32))
  weights = mask.astype(jnp.float32)[..., None]  # [B, S, S, 1]
  return jnp.sum(difference * weights) / jnp.maximum(
      jnp.sum(weights) * difference.shape[-1], 1.0)


def cosface_loss(anchors: jax.Array, positives: jax.Array, scale: float,
                 margin: float) -> jax.Array:
  """MegaPortraits' cycle-consistency loss on motion descriptors, in CosFace form.

  Row n of `anchors` [N, D] should match row n of `positives` [N, D] (cosine similarity pushed
  above the others by `margin`) and not the other rows, which act as negatives:
    -mean_n log( e^{s (cos(a_n, p_n) - m)} / (e^{s (cos(a_n, p_n) - m)} + sum_{k != n}
                 e^{s cos(a_n, p_k)}) ).
  Returns a float32 scalar.
  """
  anchors = _normalise(anchors.astype(jnp.float32))
  positives = _normalise(positives.astype(jnp.float32))
  cosines = anchors @ positives.T  # [N, N]
  logits = scale * (cosines - margin * jnp.eye(cosines.shape[0]))
  return -jnp.mean(jnp.diagonal(jax.nn.log_softmax(logits, axis=-1)))


def head_pose_l1(z_pose: jax.Array, head_pose_degrees: jax.Array) -> jax.Array:
  """Mean absolute error (radians) of z_pose's rotation against annotated head poses.

  `z_pose` [B, 7] starts with (yaw, pitch, roll) in radians (`vasa_jax.models.warping`);
  `head_pose_degrees` [B, 3] is the data's (yaw, pitch, roll) in degrees, in the same convention
  (`vasa_jax.data.records`). Returns a float32 scalar.
  """
  target = jnp.deg2rad(head_pose_degrees.astype(jnp.float32))
  return jnp.mean(jnp.abs(z_pose[:, :3].astype(jnp.float32) - target))


def expression_l1(z_dyn: jax.Array, expression: jax.Array, centre: Sequence[float],
                  spread: Sequence[float]) -> jax.Array:
  """Mean absolute error of z_dyn's first entries against the standardised measured expression.

  `expression` [B, E] holds each frame's measured facial dynamics
  (`vasa_jax.data.input_pipeline.expression_measures`: mouth and eye opening, gaze in the head);
  `z_dyn` [B, dyn_dim >= E] carries (expression - centre) / spread ([E] each) in its first E
  entries, the rest stays free. Returns a float32 scalar.
  """
  size = expression.shape[-1]
  if z_dyn.shape[-1] < size:
    raise ValueError(f"z_dyn has {z_dyn.shape[-1]} entries, fewer than the {size} measured "
                     "expression values it should carry (raise model.dyn_dim)")
  if len(centre) != size or len(spread) != size:
    raise ValueError(f"{size} expression measures but {len(centre)} centres and "
                     f"{len(spread)} spreads (config.loss.expression_centre / _spread)")
  target = (expression.astype(jnp.float32) - jnp.asarray(centre, jnp.float32)) / jnp.asarray(
      spread, jnp.float32)
  return jnp.mean(jnp.abs(z_dyn[:, :size].astype(jnp.float32) - target))


def cross_correlation(codes: jax.Array, factors: jax.Array) -> jax.Array:
  """Mean squared Pearson correlation, over the batch, between every code entry and factor.

  A decorrelation penalty in the spirit of XCov (Cheung et al. 2015, which penalises the
  cross-covariance of two latent groups); correlations rather than covariances, so shrinking
  the codes does not lower it. codes [N, C], factors [N, F] (stop their gradient where they
  must not move). Constant columns contribute 0. Returns a float32 scalar.
  """
  def standardise(values):
    values = values.astype(jnp.float32)
    centred = values - jnp.mean(values, axis=0, keepdims=True)
    return centred / jnp.sqrt(jnp.mean(jnp.square(centred), axis=0, keepdims=True) + 1e-8)
  correlation = standardise(codes).T @ standardise(factors) / codes.shape[0]  # [C, F]
  return jnp.mean(jnp.square(correlation))


def psnr(prediction: jax.Array, target: jax.Array,
         mask: Optional[jax.Array] = None) -> jax.Array:
  """Peak signal-to-noise ratio (dB) per image of [B, H, W, C] images in [-1, 1] -> [B]; with a
  [B, H, W, 1] `mask`, over the pixels where it is 1 (nan for an image with none)."""
  squared_error = jnp.square(prediction.astype(jnp.float32) - target.astype(jnp.float32))
  if mask is None:
    error, covered = jnp.mean(squared_error, axis=(1, 2, 3)), True
  else:
    pixels = jnp.sum(mask, axis=(1, 2, 3)) * prediction.shape[-1]
    error = jnp.sum(squared_error * mask, axis=(1, 2, 3)) / jnp.maximum(pixels, 1)
    covered = pixels > 0
  score = 10.0 * jnp.log10(4.0 / jnp.maximum(error, 1e-10))  # peak-to-peak range is 2
  return jnp.where(covered, score, jnp.nan)


SSIM_WINDOW = 11  # Gaussian window of SSIM (Wang et al. 2004): 11 taps, sigma 1.5
SSIM_SIGMA = 1.5


def ssim(prediction: jax.Array, target: jax.Array) -> jax.Array:
  """Structural similarity per image of [B, H, W, C] images in [-1, 1] -> [B] (Wang et al.
  2004 with their constants: an 11-tap Gaussian window of sigma 1.5, K1 0.01 and K2 0.03 of the
  data range, population statistics, the map over the pixels whose window lies inside the image,
  averaged over pixels and channels; skimage's `structural_similarity(gaussian_weights=True,
  use_sample_covariance=False, data_range=2)` averages the same interior)."""
  taps = jnp.arange(SSIM_WINDOW, dtype=jnp.float32) - (SSIM_WINDOW - 1) / 2
  kernel = jnp.exp(-0.5 * jnp.square(taps / SSIM_SIGMA))
  kernel = kernel / jnp.sum(kernel)  # [K]

  def blur(images):  # [B, H, W, C] -> [B, H - K + 1, W - K + 1, C], separable, valid
    channels = images.shape[-1]
    rows = jnp.tile(kernel.reshape(SSIM_WINDOW, 1, 1, 1), (1, 1, 1, channels))  # [K, 1, 1, C]
    images = jax.lax.conv_general_dilated(images, rows, (1, 1), "VALID",
                                          dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                          feature_group_count=channels)
    return jax.lax.conv_general_dilated(images, rows.reshape(1, SSIM_WINDOW, 1, channels),
                                        (1, 1), "VALID",
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                        feature_group_count=channels)

  x, y = prediction.astype(jnp.float32), target.astype(jnp.float32)
  c1, c2 = (0.01 * 2.0) ** 2, (0.03 * 2.0) ** 2  # data range 2
  mean_x, mean_y = blur(x), blur(y)
  var_x = blur(x * x) - mean_x * mean_x
  var_y = blur(y * y) - mean_y * mean_y
  covariance = blur(x * y) - mean_x * mean_y
  similarity = ((2 * mean_x * mean_y + c1) * (2 * covariance + c2)
                / ((mean_x * mean_x + mean_y * mean_y + c1) * (var_x + var_y + c2)))
  return jnp.mean(similarity, axis=(1, 2, 3))


def _normalise(vectors: jax.Array) -> jax.Array:
  return vectors / jnp.sqrt(jnp.sum(jnp.square(vectors), axis=-1, keepdims=True) + 1e-12)
