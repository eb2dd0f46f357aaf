"""The motion diffusion transformer: shapes, dtypes, null conditions, scan/loop, size, learning.

A tiny model (2 layers, width 32) keeps compilation short; the forward pass is jitted once with
the masks as arguments, so every condition test reuses one compilation. Random numbers come from
"rbg" PRNG keys (see test_autoencoder.py).
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from vasa_jax.training import base_config
from vasa_jax.diffusion import conditioning
from vasa_jax.diffusion import guidance
from vasa_jax.diffusion import sampling
from vasa_jax.diffusion import schedules
from vasa_jax.models import motion_dit
from vasa_jax.models.motion_dit import MotionDiT

BATCH, WINDOW, PREVIOUS, MOTION, AUDIO, EMOTION = 2, 8, 3, 6, 5, 3


def rbg_key(seed=0):
  return jax.random.key(seed, impl="rbg")


def model_config(**fields):
  """The fields `MotionDiT.from_config` reads (configs/motion.py holds the real ones); tiny."""
  config = ml_collections.ConfigDict(dict(
      num_layers=2, embed_dim=32, num_heads=4, mlp_dim=64, motion_dim=MOTION, audio_dim=AUDIO,
      emotion_dim=EMOTION, window=WINDOW, num_previous=PREVIOUS, dropout=0.0, dtype="float32",
      carry_previous=True, entry_blend_frames=0.0, remat=False, scan=False))
  config.update(fields)
  return config


def paper_config():
  """VASA-1's size: 8 layers, width 512, 8 heads; motion [z_pose (7), z_dyn (256)], Wav2Vec2-base
  audio (768), 8 emotion classes; window 100 and 10 previous frames as JoyVASA."""
  return model_config(num_layers=8, embed_dim=512, num_heads=8, mlp_dim=2048, motion_dim=263,
                      audio_dim=768, emotion_dim=8, window=100, num_previous=10)


def model_inputs(seed=0, batch=BATCH):
  """Random inputs of the tiny model, as keyword arguments."""
  keys = jax.random.split(rbg_key(seed), 8)
  return dict(
      noisy_motion=jax.random.normal(keys[0], (batch, WINDOW, MOTION)),
      timestep=jax.random.randint(keys[1], (batch,), 0, 1000),
      previous_motion=jax.random.normal(keys[2], (batch, PREVIOUS, MOTION)),
      previous_audio=jax.random.normal(keys[3], (batch, PREVIOUS, AUDIO)),
      audio=jax.random.normal(keys[4], (batch, WINDOW, AUDIO)),
      gaze=jax.random.normal(keys[5], (batch, 2)),
      distance=jax.random.uniform(keys[7], (batch,), minval=0.5, maxval=1.5),
      emotion=jax.random.normal(keys[6], (batch, EMOTION)))


def no_drops(batch=BATCH):
  drops = {key: jnp.zeros((batch,), bool) for key in conditioning.DROP_KEYS}
  drops["audio_valid"] = jnp.ones((batch, WINDOW), bool)
  return drops


@pytest.fixture(scope="module")
def tiny():
  """(model, unboxed float32 variables, jitted apply(variables, inputs, drops))."""
  model = MotionDiT.from_config(model_config())
  variables = nn.meta.unbox(jax.jit(model.init)(rbg_key(), **model_inputs()))
  apply = jax.jit(lambda variables, inputs, drops: model.apply(variables, drops=drops, **inputs))
  return model, variables, apply


def test_from_config_reads_every_field():
  model = MotionDiT.from_config(model_config(dtype="bfloat16", remat=True, scan=True,
                                             carry_previous=False, entry_blend_frames=1.5))
  assert not model.carry_previous and model.entry_blend_frames == 1.5
  assert (model.num_layers, model.embed_dim, model.num_heads, model.mlp_dim) == (2, 32, 4, 64)
  assert (model.motion_dim, model.audio_dim, model.emotion_dim) == (MOTION, AUDIO, EMOTION)
  assert (model.window, model.num_previous) == (WINDOW, PREVIOUS)
  assert model.remat and model.scan_layers
  assert model.dtype == jnp.bfloat16 and model.param_dtype == jnp.float32


def test_output_shape_dtype_and_float32_params(tiny):
  model, variables, apply = tiny
  predicted = apply(variables, model_inputs(), no_drops())
  assert predicted.shape == (BATCH, WINDOW, MOTION) and predicted.dtype == jnp.float32
  assert np.all(np.isfinite(predicted))
  assert {leaf.dtype for leaf in jax.tree.leaves(variables)} == {jnp.dtype(jnp.float32)}
  # Missing mask keys mean "nothing dropped".
  np.testing.assert_allclose(apply(variables, model_inputs(), {}), predicted, rtol=1e-5,
                             atol=1e-6)


def test_bfloat16_compute_keeps_float32_params(tiny):
  _, variables, apply = tiny
  model = MotionDiT.from_config(model_config(dtype="bfloat16"))
  abstract = jax.eval_shape(model.init, rbg_key(), **model_inputs())
  assert {leaf.dtype for leaf in jax.tree.leaves(nn.meta.unbox(abstract))} == {
      jnp.dtype(jnp.float32)}
  predicted = jax.jit(model.apply)(variables, **model_inputs())
  assert predicted.dtype == jnp.float32
  reference = apply(variables, model_inputs(), no_drops())
  np.testing.assert_allclose(predicted, reference, atol=0.1 * float(jnp.abs(reference).max()))


def changed(inputs, names):
  """`inputs` with the arrays named in `names` replaced by different random values."""
  replacement = model_inputs(seed=99)
  return {**inputs, **{name: replacement[name] for name in names}}


@pytest.mark.parametrize("drop_key,input_names", [
    ("drop_audio", ["audio"]),
    ("drop_gaze", ["gaze"]),
    ("drop_distance", ["distance"]),
    ("drop_emotion", ["emotion"]),
    ("drop_previous", ["previous_motion", "previous_audio"]),
])
def test_dropped_condition_is_replaced_by_null_embedding(tiny, drop_key, input_names):
  _, variables, apply = tiny
  inputs, other = model_inputs(), changed(model_inputs(), input_names)
  # Drop the condition on the first example only: the second still sees it.
  drops = {**no_drops(), drop_key: jnp.array([True, False])}
  kept, replaced = apply(variables, inputs, no_drops()), apply(variables, other, no_drops())
  assert float(jnp.abs(kept - replaced).min(axis=(1, 2)).max()) > 0, "condition is ignored"
  dropped, dropped_replaced = apply(variables, inputs, drops), apply(variables, other, drops)
  np.testing.assert_array_equal(dropped[0], dropped_replaced[0])
  assert float(jnp.abs(dropped[1] - dropped_replaced[1]).max()) > 1e-4
  assert float(jnp.abs(dropped[0] - kept[0]).max()) > 1e-4  # the null is not the condition


def test_previous_carry_adds_the_last_previous_frame(tiny):
  model, variables, apply = tiny
  # With the output projection zeroed the prediction is the carry (1 at init) times X_pre[:, -1],
  # and nothing where the previous block is dropped.
  params = dict(variables["params"])  # a shallow copy: the fixture's variables stay as they are
  params["output_projection"] = jax.tree.map(jnp.zeros_like, params["output_projection"])
  inputs = model_inputs()
  drops = {**no_drops(), "drop_previous": jnp.array([False, True])}
  predicted = apply({"params": params}, inputs, drops)
  np.testing.assert_allclose(predicted[0], jnp.broadcast_to(inputs["previous_motion"][0, -1],
                                                            (WINDOW, MOTION)), atol=1e-6)
  np.testing.assert_array_equal(predicted[1], jnp.zeros((WINDOW, MOTION)))
  # The carry is learned per output frame and motion dimension.
  carry = jnp.arange(WINDOW * MOTION, dtype=jnp.float32).reshape(WINDOW, MOTION)
  predicted = apply({"params": dict(params, previous_carry=carry)}, inputs, drops)
  np.testing.assert_allclose(predicted[0], carry * inputs["previous_motion"][0, -1], rtol=1e-6)
  # Without the carry the last previous frame only enters through the transformer.
  plain = MotionDiT.from_config(model_config(carry_previous=False))
  assert "previous_carry" not in nn.meta.unbox(
      jax.eval_shape(plain.init, rbg_key(), **model_inputs()))["params"]


def test_entry_blend_starts_the_window_at_the_previous_frame_plus_a_learned_step():
  blended = MotionDiT.from_config(model_config(entry_blend_frames=2.0))
  plain = MotionDiT.from_config(model_config())
  inputs = model_inputs()
  params = nn.meta.unbox(blended.init(rbg_key(), **inputs))["params"]
  own_params = {name: value for name, value in params.items()
                if name != "entry_step_projection"}
  last_previous = inputs["previous_motion"][:, -1]  # [B, M]
  fade = jnp.exp(-jnp.arange(WINDOW) / 2.0)[None, :, None]  # [1, W, 1]
  drops = {**no_drops(), "drop_previous": jnp.array([False, True])}
  predicted = blended.apply({"params": params}, drops=drops, **inputs)
  own = plain.apply({"params": own_params}, drops=drops, **inputs)
  # The entry step is zero-initialised: an untrained window starts exactly at X_pre's last frame,
  # and the offset from the window's own prediction fades over the window.
  np.testing.assert_allclose(predicted[0, 0], last_previous[0], atol=1e-5)
  np.testing.assert_allclose(predicted[0], own[0] + fade[0] * (last_previous[0] - own[0, 0]),
                             atol=1e-5)
  # Without a previous window there is nothing to continue: the window's own prediction.
  np.testing.assert_allclose(predicted[1], own[1], atol=1e-6)
  # A learned step moves the first frame by exactly that step.
  step = jnp.linspace(-0.5, 0.5, MOTION)
  stepped = dict(params, entry_step_projection=dict(params["entry_step_projection"], bias=step))
  np.testing.assert_allclose(blended.apply({"params": stepped}, drops=drops, **inputs)[0, 0],
                             last_previous[0] + step, atol=1e-5)


def test_invalid_trailing_audio_frames_are_ignored(tiny):
  _, variables, apply = tiny
  inputs = model_inputs()
  drops = {**no_drops(), "audio_valid": jnp.arange(WINDOW)[None, :] < jnp.array([[5], [8]])}
  trailing_changed = {**inputs, "audio": inputs["audio"].at[:, 5:].set(3.0)}
  before, after = apply(variables, inputs, drops), apply(variables, trailing_changed, drops)
  np.testing.assert_array_equal(before[0], after[0])
  assert float(jnp.abs(before[1] - after[1]).max()) > 1e-4
  leading_changed = {**inputs, "audio": inputs["audio"].at[:, :5].set(3.0)}
  assert float(jnp.abs(apply(variables, leading_changed, drops)[0] - before[0]).max()) > 1e-4


def test_wrong_window_raises(tiny):
  model, variables, _ = tiny
  inputs = model_inputs()
  inputs["audio"] = inputs["audio"][:, :-1]
  with pytest.raises(ValueError, match="audio has shape"):
    model.apply(variables, **inputs)


def stack_layers(params, num_layers):
  """Looped-layer params (block_0, block_1, ...) restacked as scanned params ("blocks")."""
  blocks = [params[f"block_{index}"] for index in range(num_layers)]
  stacked = {name: value for name, value in params.items() if not name.startswith("block_")}
  stacked["blocks"] = jax.tree.map(lambda *leaves: jnp.stack(leaves), *blocks)
  return stacked


@pytest.mark.parametrize("scan", [True, False])
def test_scanned_and_rematerialised_layers_match_loop(tiny, scan):
  _, variables, apply = tiny
  variant = MotionDiT.from_config(model_config(scan=scan, remat=True))
  params = stack_layers(variables["params"], 2) if scan else variables["params"]
  abstract = nn.meta.unbox(jax.eval_shape(variant.init, rbg_key(), **model_inputs()))
  assert jax.tree.map(lambda leaf: (leaf.shape, leaf.dtype), abstract["params"]) == jax.tree.map(
      lambda leaf: (leaf.shape, leaf.dtype), params)

  def loss(params):
    predicted = variant.apply({"params": params}, **model_inputs())
    return jnp.mean(jnp.square(predicted)), predicted

  (_, predicted), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(params)
  np.testing.assert_allclose(predicted, apply(variables, model_inputs(), no_drops()), rtol=1e-4,
                             atol=1e-5)
  assert all(np.all(np.isfinite(leaf)) for leaf in jax.tree.leaves(grads))


def test_parameters_carry_logical_names_the_sharding_rules_map():
  model = MotionDiT.from_config(model_config(scan=True))
  specs = nn.get_partition_spec(motion_dit.abstract_variables(model))
  rules = base_config.base_config().sharding_rules
  mesh_specs = jax.tree.leaves(
      jax.tree.map(lambda spec: nn.logical_to_mesh_axes(spec, rules), specs,
                   is_leaf=lambda spec: isinstance(spec, jax.sharding.PartitionSpec)),
      is_leaf=lambda spec: isinstance(spec, jax.sharding.PartitionSpec))
  used_axes = {axis for spec in mesh_specs for axis in spec if axis is not None}
  assert used_axes == {"fsdp", "model"}
  block_specs = specs["params"]["blocks"]
  assert tuple(block_specs["mlp_in"]["kernel"]) == ("layers", "embed", "mlp")
  assert tuple(block_specs["attention"]["query"]["kernel"]) == ("layers", "embed", "heads", None)


def test_paper_size_parameter_count():
  model = MotionDiT.from_config(paper_config())
  count = motion_dit.parameter_count(motion_dit.abstract_variables(model))
  print(f"MotionDiT paper size: {count / 1e6:.2f}M parameters (VASA-1 reports ~29M)")
  assert 20e6 < count < 40e6


def test_empty_emotion_is_supported():
  model = MotionDiT.from_config(model_config(emotion_dim=0))
  inputs = {**model_inputs(), "emotion": jnp.zeros((BATCH, 0))}
  predicted = jax.eval_shape(model.init_with_output, rbg_key(), **inputs)[0]
  assert predicted.shape == (BATCH, WINDOW, MOTION)


def test_guided_ddim_sampling_with_the_model(tiny):
  model, variables, _ = tiny
  inputs = model_inputs()
  conditions = {key: inputs[key] for key in motion_dit.CONDITION_KEYS}
  denoise_fn = guidance.with_guidance(motion_dit.make_denoise_fn(model, variables))
  schedule = schedules.make_schedule("cosine", 1000)
  first_window = {"drop_previous": jnp.ones((BATCH,), bool)}
  sampled = jax.jit(lambda conditions: sampling.sample(
      denoise_fn, schedule, jax.random.normal(rbg_key(1), (BATCH, WINDOW, MOTION)), conditions,
      first_window, rbg_key(2), 3))(conditions)
  assert sampled.shape == (BATCH, WINDOW, MOTION) and np.all(np.isfinite(sampled))


def test_tiny_model_overfits_a_fixed_batch(tiny):
  model, variables, _ = tiny
  batch = 4
  inputs = model_inputs(seed=5, batch=batch)
  x0 = jax.random.normal(rbg_key(6), (batch, WINDOW, MOTION))
  schedule = schedules.make_schedule("linear", 1000)
  inputs["noisy_motion"] = schedules.q_sample(
      schedule, x0, inputs["timestep"], jax.random.normal(rbg_key(7), x0.shape))
  drops = conditioning.sample_condition_dropout(rbg_key(8), batch, WINDOW)
  optimizer = optax.adam(3e-3)

  def loss_fn(params):
    predicted = model.apply({"params": params}, drops=drops, **inputs)
    return schedules.x0_loss(predicted, x0, drops["audio_valid"])

  def train_step(state, _):
    params, optimizer_state = state
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, optimizer_state = optimizer.update(grads, optimizer_state)
    return (optax.apply_updates(params, updates), optimizer_state), loss

  params = variables["params"]
  _, losses = jax.jit(lambda params: jax.lax.scan(
      train_step, (params, optimizer.init(params)), length=200))(params)
  losses = np.asarray(losses)
  print(f"x0 loss: {losses[0]:.3f} -> {losses[-1]:.4f}")
  assert losses[-1] < losses[0] / 20
