"""The warmed-up EMA of the weights (`vasa_jax.training.ema`)."""

import jax.numpy as jnp
import numpy as np

from vasa_jax.training import ema


def reference_decay(step: int, max_decay: float) -> np.float32:
  """min(max_decay, (1 + t) / (10 + t)) in float32, as the module documents it."""
  t = np.float32(step)
  return np.minimum(np.float32(max_decay), (np.float32(1) + t) / (np.float32(10) + t))


def test_decay_ramps_up_to_its_maximum():
  for step, expected in ((0, 0.1), (8, 0.5), (80, 0.9), (890, 0.99), (8_990, 0.999)):
    np.testing.assert_allclose(float(ema.warmup_decay(step, 0.9999)), expected, rtol=1e-6)
  steps = np.arange(0, 20_000, 7)
  for max_decay in (0.99, 0.999):
    decays = np.array([float(ema.warmup_decay(jnp.int32(t), max_decay)) for t in steps[::50]])
    np.testing.assert_array_equal(decays, [reference_decay(t, max_decay) for t in steps[::50]])
    assert decays[-1] == np.float32(max_decay) and np.all(np.diff(decays) >= 0)


def test_ema_after_k_steps_equals_the_formula():
  """k updates of arbitrary weights equal the recursion ema_{t+1} = d_t ema_t + (1 - d_t) p_{t+1}
  computed step by step in float32 (bit for bit), and its closed form in float64."""
  rng = np.random.default_rng(0)
  initial = rng.normal(size=(5, 3)).astype(np.float32)
  live = [rng.normal(size=(5, 3)).astype(np.float32) for _ in range(30)]
  averaged = {"w": jnp.asarray(initial)}
  expected = initial.copy()
  for step, params in enumerate(live):
    averaged = ema.update(averaged, {"w": jnp.asarray(params)}, jnp.int32(step), 0.99)
    step_size = np.float32(1) - reference_decay(step, 0.99)
    expected = step_size * params + (np.float32(1) - step_size) * expected
    np.testing.assert_array_equal(np.asarray(averaged["w"]), expected, err_msg=f"step {step}")
  # Closed form: ema_k = prod_t d_t * initial + sum_j (1 - d_j) prod_{t > j} d_t * params_{j+1}.
  decays = np.array([min(0.99, (1 + t) / (10 + t)) for t in range(len(live))])
  closed = np.prod(decays) * initial.astype(np.float64)
  for j, params in enumerate(live):
    closed += (1 - decays[j]) * np.prod(decays[j + 1:]) * params
  np.testing.assert_allclose(np.asarray(averaged["w"]), closed, rtol=1e-5, atol=1e-6)
  # Early on the average is dominated by the latest weights, not by the initialisation.
  assert np.prod(decays) < 1e-3
