"""vasa_jax.sampler: window plan, determinism, one compilation, streaming, guidance, X_pre."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import motion as motion_config_lib
from vasa_jax.inference import sampler as sampler_lib
from vasa_jax.diffusion import sampling
from vasa_jax.models import motion_dit

NUM_STEPS = 4  # denoising steps in these tests (the config's 50 only cost time)


@pytest.fixture(scope="module")
def config():
  return motion_config_lib.get_config("tiny")


@pytest.fixture(scope="module")
def params(config):
  """Initial MotionDiT weights (random: every input changes the output)."""
  model = motion_dit.MotionDiT.from_config(config.model)
  variables = jax.jit(model.init)(jax.random.key(0, impl="rbg"), *_dummy_inputs(model))
  return nn.meta.unbox(variables["params"])


def _dummy_inputs(model):
  def zeros(*shape, dtype=jnp.float32):
    return jnp.zeros((1,) + shape, dtype)
  return (zeros(model.window, model.motion_dim), zeros(dtype=jnp.int32),
          zeros(model.num_previous, model.motion_dim), zeros(model.num_previous, model.audio_dim),
          zeros(model.window, model.audio_dim), zeros(2), zeros(), zeros(model.emotion_dim))


@pytest.fixture(scope="module")
def statistics(config):
  rng = np.random.default_rng(0)
  shapes = sampler_lib.statistics_shapes(config.model)
  return {name: {"mean": rng.normal(size=shape).astype(np.float32),
                 "std": rng.uniform(0.5, 2.0, size=shape).astype(np.float32)}
          for name, shape in shapes.items()}


@pytest.fixture(scope="module")
def sampler(config, params, statistics):
  return sampler_lib.MotionSampler(config, params, statistics, num_steps=NUM_STEPS)


def _features(num_frames, seed=0, audio_dim=40):
  return np.random.default_rng(seed).normal(size=(num_frames, audio_dim)).astype(np.float32)


CONTROLS = dict(gaze=(5.0, -3.0), distance=1.1)


@pytest.mark.parametrize("num_frames,window,expected", [
    (7, 25, [(0, 7)]),
    (25, 25, [(0, 25)]),
    (60, 25, [(0, 25), (25, 25), (50, 10)]),
    (1, 4, [(0, 1)]),
])
def test_window_plan_covers_every_frame_once(num_frames, window, expected):
  plan = sampler_lib.window_plan(num_frames, window)
  assert plan == expected
  covered = np.concatenate([np.arange(start, start + length) for start, length in plan])
  np.testing.assert_array_equal(covered, np.arange(num_frames))


def test_window_plan_rejects_empty_audio():
  with pytest.raises(ValueError, match="at least one frame"):
    sampler_lib.window_plan(0, 25)


@pytest.mark.parametrize("num_frames", [7, 25, 60])
def test_generate_returns_one_frame_per_audio_frame(sampler, num_frames):
  motion = sampler.generate(_features(num_frames), **CONTROLS)
  assert motion.shape == (num_frames, sampler.motion_dim)
  assert motion.dtype == np.float32 and np.all(np.isfinite(motion))


def test_deterministic_for_a_seed_and_different_across_seeds(sampler):
  features = _features(60)
  first = sampler.generate(features, seed=3, **CONTROLS)
  np.testing.assert_array_equal(first, sampler.generate(features, seed=3, **CONTROLS))
  other = sampler.generate(features, seed=4, **CONTROLS)
  for start, length in sampler_lib.window_plan(60, sampler.window):  # every window differs
    assert np.abs(first[start:start + length] - other[start:start + length]).max() > 1e-3


def test_one_compilation_across_windows_calls_scales_and_streams(config, params, statistics):
  sampler = sampler_lib.MotionSampler(config, params, statistics, num_steps=2)
  assert sampler.trace_count == 0
  sampler.generate(_features(60), **CONTROLS)  # 3 windows, the last one short
  sampler.generate(_features(7), seed=1)  # another length, controls dropped
  sampler.generate(_features(30), lambda_audio=0.0, lambda_gaze=2.0, **CONTROLS)
  for _ in sampler.stream([_features(3), _features(40), _features(11)], **CONTROLS):
    pass
  assert sampler.trace_count == 1


def test_steps_per_call_equal_a_sampler_built_with_them(config, params, statistics, sampler):
  features = _features(30)
  two_steps = sampler_lib.MotionSampler(config, params, statistics, num_steps=2)
  expected = two_steps.generate(features, seed=2, **CONTROLS)
  traces = sampler.trace_count
  np.testing.assert_allclose(sampler.generate(features, seed=2, num_steps=2, **CONTROLS),
                             expected, rtol=1e-5, atol=1e-5)
  sampler.generate(features, seed=2, num_steps=2, **CONTROLS)
  assert sampler.trace_count == traces + 1  # one compilation for the new number of steps
  default = sampler.generate(features, seed=2, **CONTROLS)  # NUM_STEPS: a different result
  assert np.abs(default - expected).max() > 1e-3
  with pytest.raises(ValueError, match="num_sampling_steps 1001 must be in"):
    sampler.start_stream(num_steps=1001)


def test_streaming_gives_the_offline_motion(sampler):
  features = _features(60)
  offline = sampler.generate(features, seed=5, **CONTROLS)
  chunks = [features[start:start + 7] for start in range(0, 60, 7)]  # 8 x 7 + 4
  streamed = list(sampler.stream(chunks, seed=5, **CONTROLS))
  # Each chunk returns the windows it completes (W = 25), the end the last, shorter one.
  assert [len(motion) for motion in streamed] == [0, 0, 0, 25, 0, 0, 0, 25, 0, 10]
  np.testing.assert_array_equal(np.concatenate(streamed), offline)


def _window_inputs(sampler, seed):
  rng = np.random.default_rng(seed)
  k, w = sampler.num_previous, sampler.window
  conditions = {
      "previous_motion": rng.normal(size=(1, k, sampler.motion_dim)),
      "previous_audio": rng.normal(size=(1, k, sampler.audio_dim)),
      "audio": rng.normal(size=(1, w, sampler.audio_dim)),
      "gaze": rng.normal(size=(1, 2)), "distance": rng.normal(size=(1,)),
      "emotion": np.zeros((1, sampler.emotion_dim))}
  conditions = {key: jnp.asarray(value, jnp.float32) for key, value in conditions.items()}
  drops = {"drop_previous": jnp.array([False]), "drop_gaze": jnp.array([False]),
           "drop_distance": jnp.array([False]), "drop_emotion": jnp.array([False]),
           "audio_valid": jnp.arange(w)[None] < w - 3}
  return conditions, drops


def test_zero_guidance_equals_the_conditional_sampler(sampler, params):
  conditions, drops = _window_inputs(sampler, 0)
  rng = jax.random.key(7, impl=sampler.prng_impl)
  guided = sampler.sample_window(conditions, drops, rng, 0.0, 0.0)
  noise_rng, steps_rng = jax.random.split(rng)
  x_start = jax.random.normal(noise_rng, (1, sampler.window, sampler.motion_dim))
  conditional = sampling.sample(
      motion_dit.make_denoise_fn(sampler.model, {"params": params}), sampler.schedule, x_start,
      conditions, drops, steps_rng, NUM_STEPS, sampler.method, sampler.eta)
  np.testing.assert_allclose(np.asarray(guided), np.asarray(conditional), rtol=1e-4, atol=1e-4)
  # The scales matter: default guidance differs from the conditional sample.
  default = sampler.sample_window(conditions, drops, rng, 0.5, 1.0)
  assert np.abs(np.asarray(default) - np.asarray(conditional)).max() > 1e-3


def test_second_window_is_conditioned_on_the_first(sampler):
  features = _features(50)
  changed = features.copy()
  changed[:25] = _features(25, seed=9)  # only the first window's audio differs
  base = sampler.generate(features, seed=2, **CONTROLS)
  other = sampler.generate(changed, seed=2, **CONTROLS)
  assert np.abs(base[:25] - other[:25]).max() > 1e-3
  # The second window's own audio and noise are the same: only X_pre and A_pre carry the change.
  assert np.abs(base[25:] - other[25:]).max() > 1e-3
  # Without a previous block the second window would not depend on the first at all.
  conditions, drops = _window_inputs(sampler, 1)
  rng = jax.random.key(0, impl=sampler.prng_impl)
  dropped = dict(drops, drop_previous=jnp.array([True]))
  moved = dict(conditions, previous_motion=conditions["previous_motion"] + 1.0)
  np.testing.assert_allclose(np.asarray(sampler.sample_window(conditions, dropped, rng, 0.5, 1)),
                             np.asarray(sampler.sample_window(moved, dropped, rng, 0.5, 1)),
                             atol=1e-6)
  assert np.abs(np.asarray(sampler.sample_window(conditions, drops, rng, 0.5, 1))
                - np.asarray(sampler.sample_window(moved, drops, rng, 0.5, 1))).max() > 1e-3


def test_controls_and_denormalisation(config, params, statistics, sampler):
  features = _features(30)
  with_gaze = sampler.generate(features, seed=1, **CONTROLS)
  without_gaze = sampler.generate(features, seed=1, distance=CONTROLS["distance"])
  assert np.abs(with_gaze - without_gaze).max() > 1e-3  # a missing gaze is dropped, not zero
  with pytest.raises(ValueError, match="emotion must have 8 values"):
    sampler.generate(features, emotion=[0.5])
  with pytest.raises(ValueError, match="gaze must be"):
    sampler.generate(features, gaze=[1.0, 2.0, 3.0])
  # The output is the model's normalised motion mapped through the motion statistics.
  shifted = dict(statistics, motion={"mean": statistics["motion"]["mean"] + 10.0,
                                     "std": statistics["motion"]["std"] * 2.0})
  shifted_sampler = sampler_lib.MotionSampler(config, params, shifted, num_steps=NUM_STEPS)
  normalised = (with_gaze - statistics["motion"]["mean"]) / statistics["motion"]["std"]
  np.testing.assert_allclose(shifted_sampler.generate(features, seed=1, **CONTROLS),
                             normalised * shifted["motion"]["std"] + shifted["motion"]["mean"],
                             rtol=1e-4, atol=1e-4)
