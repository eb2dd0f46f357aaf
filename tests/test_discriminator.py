"""Multi-scale patch discriminator: shapes, parameter names, hinge and feature-matching losses."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vasa_jax.models import discriminator

# The "rbg" PRNG compiles its random-bit kernels much faster than threefry on CPU.
INIT_KEY = jax.random.key(0, impl="rbg")


@pytest.mark.parametrize("num_scales", [2, 3])
def test_output_shapes_at_64(num_scales):
  model = discriminator.MultiScaleDiscriminator(num_scales=num_scales, base_features=8,
                                                num_layers=3)
  images = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (2, 64, 64, 3)), jnp.float32)
  variables = model.init(INIT_KEY, images)
  features, logits = model.apply(variables, images)
  assert len(features) == len(logits) == num_scales
  for scale in range(num_scales):
    assert len(features[scale]) == 4  # num_layers strided convs + the stride-1 conv
    side = 64 // 2**scale
    assert [f.shape for f in features[scale]] == [
        (2, side // 2, side // 2, 8), (2, side // 4, side // 4, 16), (2, side // 8, side // 8, 32),
        (2, side // 8, side // 8, 64)]
    assert logits[scale].shape == (2, side // 8, side // 8, 1)
    assert logits[scale].dtype == jnp.float32
    assert np.isfinite(logits[scale]).all()
  kernel = variables["params"]["scale_0"]["conv_1"]["kernel"]
  assert kernel.names == (None, None, None, "channels")
  assert "norm_1" in variables["params"]["scale_0"]


@pytest.mark.parametrize("size", [256, 512])
def test_paper_sizes_and_options(size):
  model = discriminator.MultiScaleDiscriminator(num_scales=3, num_layers=4, instance_norm=False,
                                                dtype=jnp.bfloat16)
  images = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
  variables = jax.eval_shape(model.init, jax.random.key(0), images)
  assert not any("norm" in name for name in variables["params"]["scale_0"])
  features, logits = jax.eval_shape(model.apply, variables, images)
  assert [l.shape for l in logits] == [(1, size // 16 // 2**s, size // 16 // 2**s, 1)
                                       for s in range(3)]
  assert features[0][-1].shape == (1, size // 16, size // 16, 512)  # capped at max_features
  assert features[0][-1].dtype == jnp.bfloat16 and logits[0].dtype == jnp.float32


def test_hinge_losses_on_hand_made_logits():
  ones = jnp.ones((2, 4, 4, 1))
  assert float(discriminator.hinge_d_loss(1.5 * ones, -2.0 * ones)) == 0.0
  assert float(discriminator.hinge_d_loss([ones, 3 * ones], [-ones, -5 * ones])) == 0.0
  # relu(1 - 0.5) + relu(1 + 0) = 1.5.
  np.testing.assert_allclose(discriminator.hinge_d_loss(0.5 * ones, 0.0 * ones), 1.5)
  # Averaged over scales: (1.5 + 0) / 2.
  np.testing.assert_allclose(
      discriminator.hinge_d_loss([0.5 * ones, ones], [0.0 * ones, -ones]), 0.75)
  real = jnp.array([[2.0, 0.0]])  # relu(1 - real) = [0, 1] -> mean 0.5
  fake = jnp.array([[0.0, -3.0]])  # relu(1 + fake) = [1, 0] -> mean 0.5
  np.testing.assert_allclose(discriminator.hinge_d_loss(real, fake), 1.0)
  np.testing.assert_allclose(discriminator.hinge_g_loss([fake, 2 * ones]), (1.5 - 2.0) / 2)
  with pytest.raises(ValueError, match="2 real but 1 fake"):
    discriminator.hinge_d_loss([ones, ones], [ones])


def test_feature_matching_loss():
  real = [[jnp.zeros((1, 4, 4, 2)), jnp.zeros((1, 2, 2, 4))], [jnp.ones((1, 2, 2, 2))]]
  assert float(discriminator.feature_matching_loss(real, real)) == 0.0
  fake = [[jnp.full((1, 4, 4, 2), 2.0), jnp.zeros((1, 2, 2, 4))], [jnp.ones((1, 2, 2, 2))]]
  np.testing.assert_allclose(discriminator.feature_matching_loss(real, fake), 2.0 / 3)
  # Gradients reach the generated features only.
  real_gradient, fake_gradient = jax.grad(discriminator.feature_matching_loss, argnums=(0, 1))(
      real, fake)
  assert all(float(jnp.abs(g).sum()) == 0.0 for g in jax.tree.leaves(real_gradient))
  assert float(jnp.abs(fake_gradient[0][0]).sum()) > 0.0
  with pytest.raises(ValueError, match="3 real but 2 fake"):
    discriminator.feature_matching_loss(real, fake[0])


def test_losses_on_discriminator_outputs_jit():
  model = discriminator.MultiScaleDiscriminator(num_scales=2, base_features=8, num_layers=2)
  rng = np.random.default_rng(1)
  real = jnp.asarray(rng.uniform(-1, 1, (2, 32, 32, 3)), jnp.float32)
  fake = jnp.asarray(rng.uniform(-1, 1, (2, 32, 32, 3)), jnp.float32)
  variables = model.init(INIT_KEY, real)

  @jax.jit
  def losses(variables, real, fake):
    real_features, real_logits = model.apply(variables, real)
    fake_features, fake_logits = model.apply(variables, fake)
    return (discriminator.hinge_d_loss(real_logits, fake_logits),
            discriminator.hinge_g_loss(fake_logits),
            discriminator.feature_matching_loss(real_features, fake_features),
            discriminator.feature_matching_loss(real_features, real_features))

  d_loss, g_loss, matching, matching_same = losses(nn.unbox(variables), real, fake)
  assert float(d_loss) > 0.0 and np.isfinite(float(g_loss))
  assert float(matching) > 0.0 and float(matching_same) == 0.0
