"""The pure diffusion functions: schedules, noising, loss, condition dropout, guidance, samplers.

Random numbers come from "rbg" PRNG keys (compiling threefry on CPU is slow, see
test_autoencoder.py).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vasa_jax.diffusion import conditioning
from vasa_jax.diffusion import guidance
from vasa_jax.diffusion import normalization
from vasa_jax.diffusion import sampling
from vasa_jax.diffusion import schedules


def rbg_key(seed=0):
  return jax.random.key(seed, impl="rbg")


@pytest.mark.parametrize("kind", schedules.SCHEDULE_KINDS)
@pytest.mark.parametrize("num_steps", [50, 1000])
def test_alphas_cumprod_decrease_inside_unit_interval(kind, num_steps):
  schedule = schedules.make_schedule(kind, num_steps)
  alpha_bar = np.asarray(schedule.alphas_cumprod)
  assert schedule.num_steps == num_steps and alpha_bar.dtype == np.float32
  assert np.all(np.diff(alpha_bar) < 0)
  assert 0 < alpha_bar[-1] and alpha_bar[0] < 1
  assert alpha_bar[0] > 0.97 and alpha_bar[-1] < 0.01  # nearly clean to nearly pure noise
  np.testing.assert_allclose(alpha_bar, np.cumprod(1 - np.asarray(schedule.betas, np.float64)),
                             rtol=1e-4)


def test_unknown_schedule_kind_raises():
  with pytest.raises(ValueError, match="unknown schedule kind"):
    schedules.make_schedule("quadratic", 10)


def test_q_sample_at_first_step_is_nearly_clean():
  schedule = schedules.make_schedule("linear", 1000)
  x0 = jax.random.normal(rbg_key(1), (4, 16, 6))
  noise = jax.random.normal(rbg_key(2), x0.shape)
  x_t = schedules.q_sample(schedule, x0, jnp.zeros((4,), jnp.int32), noise)
  np.testing.assert_allclose(x_t, x0, atol=0.05)


def test_q_sample_statistics():
  schedule = schedules.make_schedule("cosine", 1000)
  t = jnp.array([100, 500, 900])
  x0 = jnp.full((3, 20000, 1), 2.0)
  x_t = schedules.q_sample(schedule, x0, t, jax.random.normal(rbg_key(3), x0.shape))
  alpha_bar = np.asarray(schedule.alphas_cumprod)[np.asarray(t)]
  np.testing.assert_allclose(x_t.mean(axis=(1, 2)), 2.0 * np.sqrt(alpha_bar), atol=0.03)
  np.testing.assert_allclose(x_t.std(axis=(1, 2)), np.sqrt(1 - alpha_bar), rtol=0.03)


def test_x0_loss_excludes_masked_frames():
  x0 = jnp.zeros((2, 3, 4))
  predicted = x0.at[:, :2].set(1.0).at[:, 2].set(100.0)  # the last frame is far off
  frame_mask = jnp.array([[True, True, False], [True, True, False]])
  assert float(schedules.x0_loss(predicted, x0, frame_mask)) == pytest.approx(1.0)
  assert float(schedules.x0_loss(predicted, x0)) == pytest.approx((2 + 100.0**2) / 3)
  assert float(schedules.x0_loss(predicted, x0, jnp.zeros((2, 3), bool))) == 0.0


def test_velocity_loss_scores_the_steps_and_the_step_into_the_window():
  x0 = jax.random.normal(rbg_key(4), (2, 6, 3))
  both, neither = jnp.array([True, True]), jnp.array([False, False])
  # A constant offset keeps every step inside the window; only the step out of X_pre changes.
  shifted = x0 + 0.5
  np.testing.assert_allclose(schedules.velocity_loss(shifted, x0, neither), 0.0,
                             atol=1e-7)
  np.testing.assert_allclose(schedules.velocity_loss(shifted, x0, both), 0.25 / 6,
                             rtol=1e-5)
  # Alternating +-e jitter: every inside step is off by 2e; the entry step by e.
  jitter = x0 + 0.1 * (-1.0) ** jnp.arange(6)[None, :, None]
  np.testing.assert_allclose(schedules.velocity_loss(jitter, x0, neither), 0.04,
                             rtol=1e-5)
  np.testing.assert_allclose(schedules.velocity_loss(jitter, x0, both),
                             (5 * 0.04 + 0.01) / 6, rtol=1e-5)
  assert schedules.velocity_loss(x0, x0, both) == 0.0


def test_condition_dropout_probabilities_and_audio_truncation():
  draws, window, max_truncation = 20000, 10, 4
  probabilities = dict(conditioning.DEFAULT_PROBABILITIES, truncate_audio=0.3)
  drops = jax.jit(conditioning.sample_condition_dropout, static_argnums=(1, 2, 4))(
      rbg_key(4), draws, window, probabilities, max_truncation)
  assert set(drops) == set(conditioning.DROP_KEYS) | {conditioning.AUDIO_VALID_KEY}
  audio_valid = np.asarray(drops["audio_valid"])
  assert audio_valid.shape == (draws, window)
  valid_length = audio_valid.sum(axis=1)
  truncated = valid_length < window
  observed = {key: np.asarray(drops[key]) for key in conditioning.DROP_KEYS}
  observed["truncate_audio"] = truncated
  for key, mask in observed.items():
    assert mask.shape == (draws,) and mask.dtype == bool
    probability = probabilities[key]
    standard_error = np.sqrt(probability * (1 - probability) / draws)
    assert abs(mask.mean() - probability) < 4 * standard_error, key
  # The masks are drawn independently of each other.
  both = (observed["drop_audio"] & observed["drop_gaze"]).mean()
  assert abs(both - 0.01) < 4 * np.sqrt(0.01 * 0.99 / draws)
  # Valid audio frames form a prefix that always keeps >= window - max_truncation frames.
  np.testing.assert_array_equal(audio_valid, np.arange(window)[None] < valid_length[:, None])
  assert valid_length.min() == window - max_truncation
  assert sorted(np.unique(window - valid_length[truncated])) == [1, 2, 3, 4]


def test_audio_truncation_never_removes_every_frame():
  drops = conditioning.sample_condition_dropout(rbg_key(5), 4000, 3, {"truncate_audio": 1.0})
  valid_length = np.asarray(drops["audio_valid"]).sum(axis=1)
  assert valid_length.min() == 1 and valid_length.max() == 2  # 1..window - 1 removed
  single = conditioning.sample_condition_dropout(rbg_key(5), 100, 1, {"truncate_audio": 1.0})
  assert np.asarray(single["audio_valid"]).all()


def test_unknown_dropout_probability_raises():
  with pytest.raises(ValueError, match="unknown dropout probabilities"):
    conditioning.sample_condition_dropout(rbg_key(), 2, 4, {"drop_pose": 0.1})


class MaskDependentDenoiser:
  """A hand-made `denoise_fn`: returns 1 (conditional), 3 (audio dropped), 7 (gaze dropped) per
  example (+ 100 where drop_previous), plus t; counts its calls and records batch sizes."""

  def __init__(self):
    self.batch_sizes = []

  def __call__(self, x_t, t, conditions, drops):
    self.batch_sizes.append(x_t.shape[0])
    assert conditions["audio"].shape[0] == x_t.shape[0] == t.shape[0]
    value = jnp.where(drops["drop_audio"], 3.0, jnp.where(drops["drop_gaze"], 7.0, 1.0))
    value = value + 100.0 * drops["drop_previous"] + t
    return jnp.broadcast_to(value[:, None, None], x_t.shape)


def test_guided_x0_matches_formula_in_one_call():
  batch = 2
  x_t = jnp.zeros((batch, 5, 3))
  t = jnp.array([10, 20])
  conditions = {"audio": jnp.zeros((batch, 5, 4))}
  drops = {"drop_previous": jnp.array([True, False])}
  denoiser = MaskDependentDenoiser()
  lambda_audio, lambda_gaze = 0.5, 1.0
  guided = guidance.guided_x0(denoiser, x_t, t, conditions, lambda_audio, lambda_gaze, drops)
  assert denoiser.batch_sizes == [3 * batch]
  offset = np.array([110.0, 20.0])  # drop_previous and t of each example
  expected = ((1 + lambda_audio + lambda_gaze) * (1 + offset) - lambda_audio * (3 + offset)
              - lambda_gaze * (7 + offset))
  np.testing.assert_allclose(guided, np.broadcast_to(expected[:, None, None], x_t.shape),
                             rtol=1e-6)


def test_guided_x0_without_guidance_is_the_conditional_prediction():
  x_t = jnp.zeros((3, 4, 2))
  t = jnp.array([1, 2, 3])
  denoiser = MaskDependentDenoiser()
  guided = guidance.guided_x0(denoiser, x_t, t, {"audio": jnp.zeros((3, 4, 5))}, 0.0, 0.0)
  np.testing.assert_array_equal(guided, jnp.broadcast_to((1.0 + t)[:, None, None], x_t.shape))
  assert denoiser.batch_sizes == [9]


def test_guided_sampling_runs_in_scan_with_traced_scales():
  schedule = schedules.make_schedule("linear", 100)
  denoiser = MaskDependentDenoiser()

  @jax.jit
  def run(lambdas):
    guided = guidance.with_guidance(denoiser, lambdas[0], lambdas[1])
    return sampling.sample(guided, schedule, jnp.zeros((2, 4, 3)),
                           {"audio": jnp.zeros((2, 4, 5))}, None, rbg_key(6), 5)

  x0 = run(jnp.array([0.5, 1.0]))
  assert denoiser.batch_sizes == [6]  # traced once inside the scan body, on the 3B batch
  # The last step returns the guided prediction at t = 0: 2.5 * 1 - 0.5 * 3 - 1 * 7 = -6.
  np.testing.assert_allclose(x0, -6.0, rtol=1e-6)


def test_sampling_timesteps_are_strided_and_distinct():
  for num_steps in (1, 2, 10, 50, 1000):
    timesteps = sampling.sampling_timesteps(1000, num_steps)
    assert len(timesteps) == num_steps and timesteps[0] == 999
    assert np.all(np.diff(timesteps) < 0) and timesteps.min() >= 0
  assert sampling.sampling_timesteps(1000, 50)[-1] == 0
  with pytest.raises(ValueError):
    sampling.sampling_timesteps(10, 11)


@pytest.mark.parametrize("method,eta", [("ddim", 0.0), ("ddim", 1.0), ("ddpm", 0.0)])
def test_perfect_predictor_recovers_x0(method, eta):
  schedule = schedules.make_schedule("cosine", 1000)
  x0 = jax.random.normal(rbg_key(7), (2, 8, 3))

  def perfect_denoiser(x_t, t, conditions, drops):
    del x_t, t, drops
    return conditions["x0"]

  x_start = jax.random.normal(rbg_key(8), x0.shape)
  sampled = jax.jit(sampling.sample, static_argnums=(0, 6, 7))(
      perfect_denoiser, schedule, x_start, {"x0": x0}, None, rbg_key(9), 10, method, eta)
  if method == "ddim":
    np.testing.assert_array_equal(sampled, x0)
  else:
    np.testing.assert_allclose(sampled, x0, rtol=1e-6, atol=1e-6)


def test_ddpm_posterior_matches_textbook_formula():
  schedule = schedules.make_schedule("linear", 1000)
  x_t = jax.random.normal(rbg_key(10), (3, 4, 2))
  predicted_x0 = jax.random.normal(rbg_key(11), x_t.shape)
  t = np.array([1, 400, 999])
  mean, variance = sampling.ddpm_posterior(schedule, x_t, t, t - 1, predicted_x0)
  betas = np.asarray(schedule.betas, np.float64)
  alpha_bar = np.cumprod(1 - betas)
  beta_t, ab_t, ab_prev = betas[t], alpha_bar[t], alpha_bar[t - 1]
  shape = (-1, 1, 1)
  expected_mean = ((np.sqrt(ab_prev) * beta_t / (1 - ab_t)).reshape(shape) * predicted_x0
                   + (np.sqrt(1 - beta_t) * (1 - ab_prev) / (1 - ab_t)).reshape(shape) * x_t)
  np.testing.assert_allclose(mean, expected_mean, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(variance.reshape(-1), beta_t * (1 - ab_prev) / (1 - ab_t),
                             rtol=1e-4)
  noise = jax.random.normal(rbg_key(12), x_t.shape)
  np.testing.assert_allclose(
      sampling.ddpm_step(schedule, x_t, t, t - 1, predicted_x0, noise),
      mean + np.sqrt(variance) * noise, rtol=1e-6)
  # DDIM with eta = 1 draws from the same posterior, also across a strided gap.
  t, t_prev = np.array([50, 400, 999]), np.array([0, 300, 950])
  mean, variance = sampling.ddpm_posterior(schedule, x_t, t, t_prev, predicted_x0)
  np.testing.assert_allclose(
      sampling.ddim_step(schedule, x_t, t, t_prev, predicted_x0, noise, eta=1.0),
      mean + np.sqrt(variance) * noise, rtol=1e-4, atol=1e-5)


def test_motion_statistics_round_trip():
  motion = jax.random.normal(rbg_key(13), (3, 50, 5)) * jnp.arange(1.0, 6.0) + 10.0
  motion = motion.at[..., 0].set(4.0)  # a constant dimension
  frame_mask = jnp.ones((3, 50), bool).at[:, 40:].set(False)
  statistics = normalization.motion_statistics(motion.at[:, 40:].set(1e6), frame_mask)
  normalized = statistics.normalize(motion[:, :40])
  assert np.all(np.isfinite(normalized))
  np.testing.assert_allclose(normalized.mean(axis=(0, 1)), 0.0, atol=1e-3)
  np.testing.assert_allclose(normalized[..., 1:].std(axis=(0, 1)), 1.0, rtol=1e-3)
  np.testing.assert_allclose(statistics.denormalize(normalized), motion[:, :40], rtol=1e-5)
