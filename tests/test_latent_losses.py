"""Stage-1 loss terms on hand-made inputs (the CosFace cycle loss is in test_latent_training)."""

import jax.numpy as jnp
import numpy as np
import pytest

from vasa_jax.losses import latent as latent_losses


def test_head_pose_l1_compares_the_rotation_in_radians_and_ignores_the_rest():
  head_pose_degrees = np.array([[10.0, -5.0, 2.0], [0.0, 20.0, -30.0]], np.float32)
  z_pose = np.zeros((2, 7), np.float32)
  z_pose[:, :3] = np.deg2rad(head_pose_degrees)
  z_pose[:, 3:] = [0.3, -0.2, 0.1, 0.4]  # translation and scale are not supervised
  assert float(latent_losses.head_pose_l1(jnp.asarray(z_pose), head_pose_degrees)) < 1e-7
  z_pose[0, 0] += 0.12  # 0.12 rad off in one of the six angles
  np.testing.assert_allclose(latent_losses.head_pose_l1(jnp.asarray(z_pose), head_pose_degrees),
                             0.12 / 6, rtol=1e-5)



def test_expression_l1_compares_the_first_entries_of_z_dyn_with_the_standardised_measures():
  expression = np.array([[0.2, 0.3, 0.1, -0.05], [0.0, 0.05, -0.2, 0.1]], np.float32)
  centre, spread = (0.1, 0.3, 0.0, 0.0), (0.1, 0.05, 0.1, 0.1)
  z_dyn = np.random.default_rng(0).normal(size=(2, 16)).astype(np.float32)
  z_dyn[:, :4] = [[1.0, 0.0, 1.0, -0.5], [-1.0, -5.0, -2.0, 1.0]]  # (expression - centre) / spread
  assert float(latent_losses.expression_l1(jnp.asarray(z_dyn), expression, centre, spread)) < 1e-6
  z_dyn[1, 2] += 0.4  # one of the eight supervised entries is 0.4 off; the free ones do not count
  z_dyn[:, 4:] += 3.0
  np.testing.assert_allclose(
      latent_losses.expression_l1(jnp.asarray(z_dyn), expression, centre, spread), 0.4 / 8,
      rtol=1e-5)


def test_expression_l1_refuses_a_z_dyn_too_small_to_carry_the_expression():
  with pytest.raises(ValueError, match="raise model.dyn_dim"):
    latent_losses.expression_l1(jnp.zeros((2, 3)), np.zeros((2, 4), np.float32), (0.0,) * 4,
                                (1.0,) * 4)


def test_expression_l1_refuses_a_centre_or_spread_of_the_wrong_length():
  with pytest.raises(ValueError, match="expression_centre"):
    latent_losses.expression_l1(jnp.zeros((2, 8)), np.zeros((2, 4), np.float32), (0.0,) * 3,
                                (1.0,) * 4)


def test_cross_correlation_is_the_mean_squared_correlation_and_ignores_scale():
  # Two centred, orthogonal factor columns over 4 examples.
  factors = np.array([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]], np.float32)
  independent = np.array([[1.0], [-1.0], [-1.0], [1.0]], np.float32)  # orthogonal to both
  assert float(latent_losses.cross_correlation(jnp.asarray(independent), factors)) < 1e-10
  # A code that is 3 x factor 0 + 5 (correlation 1 with it, 0 with factor 1) next to the
  # independent one: correlations [[1, 0], [0, 0]], mean square 1/4, whatever the code's scale.
  codes = np.concatenate([3.0 * factors[:, :1] + 5.0, independent], axis=1)
  for scale in (1.0, 0.1):
    np.testing.assert_allclose(latent_losses.cross_correlation(jnp.asarray(scale * codes),
                                                               factors), 0.25, rtol=1e-4)
  # A constant code column has no correlation (and stays finite).
  constant = np.concatenate([codes, np.full((4, 1), 2.0, np.float32)], axis=1)
  np.testing.assert_allclose(latent_losses.cross_correlation(jnp.asarray(constant), factors),
                             1.0 / 6, rtol=1e-4)


def test_masked_l1_averages_only_the_masked_pixels():
  rng = np.random.default_rng(0)
  prediction, target = rng.normal(size=(2, 2, 8, 8, 3)).astype(np.float32)
  mask = np.zeros((2, 8, 8), np.uint8)
  mask[0, 2:5, 3:6] = 1
  mask[1, 7, 0] = 1
  selected = np.abs(prediction - target)[mask.astype(bool)]  # [pixels, 3]
  np.testing.assert_allclose(latent_losses.masked_l1(prediction, target, mask), selected.mean(),
                             rtol=1e-6)
  # Pixels outside the mask do not count; an empty mask gives 0.
  changed = prediction.copy()
  changed[~mask.astype(bool)] += 5.0
  np.testing.assert_allclose(latent_losses.masked_l1(changed, target, mask), selected.mean(),
                             rtol=1e-6)
  assert float(latent_losses.masked_l1(prediction, target, np.zeros_like(mask))) == 0.0


def reference_ssim(x, y):
  """Wang et al. (2004) SSIM of two [H, W] images in [-1, 1], written out with numpy: every
  11 x 11 window inside the image weighted by a normalised Gaussian of sigma 1.5, population
  statistics, C1 = (0.01 L)^2, C2 = (0.03 L)^2 with L = 2, the map averaged."""
  offsets = np.arange(11) - 5
  weights = np.exp(-0.5 * (offsets[:, None] ** 2 + offsets[None, :] ** 2) / 1.5 ** 2)
  weights /= weights.sum()
  c1, c2 = (0.01 * 2) ** 2, (0.03 * 2) ** 2
  values = []
  for i in range(x.shape[0] - 10):
    for j in range(x.shape[1] - 10):
      a, b = x[i:i + 11, j:j + 11], y[i:i + 11, j:j + 11]
      mean_a, mean_b = (weights * a).sum(), (weights * b).sum()
      var_a = (weights * (a - mean_a) ** 2).sum()
      var_b = (weights * (b - mean_b) ** 2).sum()
      cov = (weights * (a - mean_a) * (b - mean_b)).sum()
      values.append((2 * mean_a * mean_b + c1) * (2 * cov + c2)
                    / ((mean_a ** 2 + mean_b ** 2 + c1) * (var_a + var_b + c2)))
  return np.mean(values)


def test_ssim_matches_the_windowed_definition_and_its_extremes():
  rng = np.random.default_rng(0)
  target = np.clip(rng.normal(0, 0.4, size=(2, 24, 20, 3)), -1, 1)
  noisy = np.clip(target + rng.normal(0, 0.2, size=target.shape), -1, 1)
  noisy[1] = 0.5 * target[1]  # contrast halved, structure kept
  scores = np.asarray(latent_losses.ssim(jnp.asarray(noisy), jnp.asarray(target)))
  expected = [np.mean([reference_ssim(noisy[b, ..., c], target[b, ..., c]) for c in range(3)])
              for b in range(2)]
  np.testing.assert_allclose(scores, expected, rtol=1e-4)
  assert 0.2 < scores[0] < 0.95 and 0.2 < scores[1] < 0.95
  np.testing.assert_allclose(latent_losses.ssim(jnp.asarray(target), jnp.asarray(target)), 1.0,
                             rtol=1e-5)
  np.testing.assert_allclose(latent_losses.ssim(jnp.asarray(target), jnp.asarray(noisy)), scores,
                             rtol=1e-5)  # symmetric
