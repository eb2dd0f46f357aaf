"""Stage-1 training: paper-size shapes, overfitting, devices, exact resume, loss switches."""

import dataclasses
import logging
import os
import signal

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import latent as latent_config
from tests import fake_clips
from vasa_jax.data.synthtalk import dataset as synthtalk
from tests.test_training_loop import assert_trees_equal
from tests.test_training_loop import one_device_mesh
from vasa_jax.data import input_pipeline
from vasa_jax.models import pretrained
from vasa_jax.losses import latent as latent_losses
from vasa_jax.models import autoencoder as autoencoder_lib
from vasa_jax.trainers import latent
from vasa_jax.training import loop
from vasa_jax.training import sharding as sharding_lib


@pytest.fixture(scope="module")
def synthtalk_dir(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("synthtalk"))
  synthtalk.main([f"--output_dir={path}", "--num_speakers=6", "--clips_per_speaker=2",
                  "--resolution=64", "--min_seconds=1", "--max_seconds=1.5",
                  "--test_fraction=0.34", "--num_workers=1"])
  return path


def tiny_config(data_dir, **overrides):
  config = latent_config.get_config("tiny")
  config.data_dir = data_dir
  config.batch_size = 8
  config.data.eval_batch_size = 2
  config.total_steps = 4
  config.log_every_steps = 1
  config.checkpoint_every_steps = 2
  config.eval_every_steps = 0
  config.update(overrides)
  return config


def test_paper_size_init_and_train_step_trace():
  config = latent_config.get_config("extended")  # the papers' terms and this project's
  # Trace every term: the pretrained networks get abstract variables (no weight files needed).
  config.pretrained.vgg19 = "abstract"
  config.pretrained.arcface = "abstract"
  config.pretrained.gaze = "abstract"
  config.loss.region_l1 = 10.0  # off by default at paper size; traced here with the rest
  config.loss.identity_cycle = 5.0  # likewise
  config.loss.dynamics_locality = 10.0  # likewise
  networks = latent.Networks.from_config(config)
  weights = latent.loss_weights(config)
  assert all(weights[term] > 0 for term in latent.TERM_NETWORK)
  init_state, generator_tx, discriminator_tx = latent.make_init_state(networks, config)
  abstract = jax.eval_shape(init_state, jax.random.key(0))
  generator_parameters = sharding_lib.parameter_count(abstract.generator)
  print(f"paper-size face latent autoencoder: {generator_parameters:,} parameters")
  assert 100e6 < generator_parameters < 300e6
  state = jax.tree.map(lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype),
                       nn.meta.unbox(abstract))
  batch = {}
  for name in ("source", "driver", "cross_identity"):
    batch[f"{name}_image"] = jax.ShapeDtypeStruct((2, 512, 512, 3), jnp.uint8)
    batch[f"{name}_head_pose"] = jax.ShapeDtypeStruct((2, 3), jnp.float32)
    batch[f"{name}_expression"] = jax.ShapeDtypeStruct((2, input_pipeline.EXPRESSION_SIZE),
                                                       jnp.float32)
  for name in ("driver_region_mask", "source_expression_mask"):
    batch[name] = jax.ShapeDtypeStruct((2, 512, 512), jnp.uint8)
  batch["driver_eye_boxes"] = jax.ShapeDtypeStruct((2, 2, 4), jnp.float32)
  frozen = {"vgg19": pretrained.abstract_variables(networks.vgg),
            "arcface": pretrained.abstract_variables(networks.arcface),
            "gaze": pretrained.abstract_variables(networks.gaze)}
  train_step = latent.make_train_step(networks, config, weights, generator_tx, discriminator_tx)
  new_state, metrics = jax.eval_shape(train_step, state, batch, jax.random.key(1), frozen)
  assert jax.tree.structure(new_state) == jax.tree.structure(state)
  assert {"loss/l1", "loss/vgg", "loss/face", "loss/identity", "loss/cycle",
          "loss/pairwise_l1", "loss/head_pose", "loss/expression", "loss/transfer_cycle",
          "loss/pose_decorrelation", "loss/region_l1", "loss/identity_cycle",
          "loss/dynamics_locality", "loss/gaze", "loss/adversarial", "loss/feature_matching",
          "loss/discriminator"} <= set(metrics)


def test_missing_pretrained_weights_turn_their_terms_off_and_say_so(caplog):
  config = latent_config.get_config("tiny")
  with caplog.at_level(logging.WARNING):
    weights = latent.loss_weights(config)
  assert weights["vgg"] == weights["face"] == weights["identity"] == 0.0
  assert weights["l1"] > 0 and weights["cycle"] > 0 and weights["adversarial"] > 0
  assert "loss term 'vgg' (weight 20) is OFF" in caplog.text
  assert "config.pretrained.arcface names no weight file" in caplog.text


def test_decorrelation_acts_on_free_entries_or_on_all_and_never_on_none():
  config = latent_config.get_config("small")
  assert config.model.dyn_dim == len(config.loss.expression_measures) == 1  # no free entries
  weights = latent.loss_weights(config)
  assert weights["pose_decorrelation"] == 10.0
  assert latent.undecorrelated_entries(config, weights) == 0  # the mouth entry too
  config.loss.decorrelate_expression = False  # the free entries alone: there are none
  assert latent.undecorrelated_entries(config, weights) == 1
  with pytest.raises(ValueError, match="model.dyn_dim 1 leaves none beside the 1"):
    latent.loss_weights(config)
  config.model.dyn_dim = 2
  assert latent.loss_weights(config)["pose_decorrelation"] == 10.0
  config.loss.detach_expression_codes = False  # needs the expression term
  config.loss.expression = 0.0  # nothing supervised: every entry is free
  assert latent.undecorrelated_entries(config, latent.loss_weights(config)) == 0


def test_expression_term_carries_the_named_measures_in_their_order(synthtalk_dir):
  config, networks, weights, params, batch, images = one_term_setup(synthtalk_dir, "expression")
  images["expression"] = jnp.concatenate(  # [3B, 4]: every measure, in EXPRESSION_NAMES order
      [batch[f"{name}_expression"] for name in ("source", "driver", "cross_identity")])
  config.loss.expression_measures = ("gaze_phi_in_head", "mouth_opening")
  assert latent.expression_columns(config) == [3, 0]
  total, (terms, outputs) = latent.generator_loss(networks, weights, config, params, None, {},
                                                  images, jax.random.key(1))
  centre = np.asarray(config.loss.expression_centre)[[3, 0]]
  spread = np.asarray(config.loss.expression_spread)[[3, 0]]
  # The frames the motion encoder read: source and driver (no render needs the cross frame).
  read = outputs["z_dyn"].shape[0]
  assert read == 2 * batch["source_image"].shape[0]
  target = (np.asarray(images["expression"])[:read, [3, 0]] - centre) / spread  # [2B, 2]
  by_hand = np.mean(np.abs(np.asarray(outputs["z_dyn"])[:, :2] - target))
  np.testing.assert_allclose(terms["expression"], by_hand, rtol=1e-5)
  np.testing.assert_allclose(total, by_hand, rtol=1e-5)  # the only term on
  # Every measure in its stored order is a different target, so a different value.
  config.loss.expression_measures = input_pipeline.EXPRESSION_NAMES
  every = latent.generator_loss(networks, weights, config, params, None, {}, images,
                                jax.random.key(1))[1][0]["expression"]
  assert abs(float(every) - by_hand) > 1e-3
  # Names the data does not measure, or one twice, are refused with the valid names.
  for names in (("mouth_opening", "smile"), ("mouth_opening", "mouth_opening")):
    config.loss.expression_measures = names
    with pytest.raises(ValueError, match="must name distinct measures among.*eye_opening"):
      latent.expression_columns(config)
  # Centres or spreads that are not one per stored measure are refused, naming the field.
  config.loss.expression_measures = ("mouth_opening",)
  config.loss.expression_spread = (0.1, 0.15, 0.1)
  with pytest.raises(ValueError, match="loss.expression_spread has 3 values, not one per"):
    latent.expression_columns(config)
  # A z_dyn shorter than its measures, or cosine cycles on a 1-entry z_dyn, are refused.
  small = latent_config.get_config("small")
  small.loss.expression_measures = ("mouth_opening", "eye_opening")
  with pytest.raises(ValueError, match="names 2 measures.*model.dyn_dim is 1"):
    latent.loss_weights(small)
  small = latent_config.get_config("small")
  small.loss.transfer_cycle = 2.0
  with pytest.raises(ValueError, match="loss.transfer_cycle compare z_dyn codes by their cosine"):
    latent.loss_weights(small)


def test_cosface_loss_rewards_matching_descriptors():
  rng = np.random.default_rng(0)
  descriptors = jnp.asarray(rng.normal(size=(6, 8)), jnp.float32)
  matched = latent_losses.cosface_loss(descriptors, descriptors, scale=5.0, margin=0.2)
  shuffled = latent_losses.cosface_loss(descriptors, descriptors[::-1], scale=5.0, margin=0.2)
  assert matched < shuffled
  # The formula on a 2x2 case: cos = [[1, 0], [0, 1]].
  eye = jnp.eye(2)
  expected = -np.log(np.exp(5 * 0.8) / (np.exp(5 * 0.8) + np.exp(0.0)))
  np.testing.assert_allclose(latent_losses.cosface_loss(eye, eye, 5.0, 0.2), expected, rtol=1e-5)


def test_tiny_model_overfits_a_handful_of_frames(synthtalk_dir):
  # Two frame pairs and the reconstruction objective alone (the pairwise, cycle and GAN terms
  # have their own tests): the reenacted frame should memorise its driver.
  config = tiny_config(synthtalk_dir)
  for term in ("adversarial", "feature_matching", "cycle", "pose_decorrelation", "pairwise_l1",
               "transfer_cycle"):
    config.loss[term] = 0.0
  # A high rate cosine-decayed over the 60 steps, so that the last steps settle.
  config.total_steps = 60
  config.optimizer.learning_rate = 3e-3
  config.optimizer.final_learning_rate = 1e-4
  networks = latent.Networks.from_config(config)
  weights = latent.loss_weights(config)
  init_state, generator_tx, discriminator_tx = latent.make_init_state(networks, config)
  state = jax.jit(lambda rng: nn.meta.unbox(init_state(rng)))(loop.root_rng(config))
  batch = next(input_pipeline.stage1_iterator(synthtalk_dir, "train", batch_size=2,
                                              image_size=64, seed=0))
  train_step = jax.jit(latent.make_train_step(networks, config, weights, generator_tx,
                                              discriminator_tx))
  frozen = {"vgg19": None, "arcface": None}
  initial = jax.device_get(state.generator)
  losses = []
  for step in range(config.total_steps):
    state, metrics = train_step(state, batch, jax.random.fold_in(loop.root_rng(config), step),
                                frozen)
    losses.append(float(metrics["loss/l1"]))
    if step == 0:  # the EMA's warm-up: decay min(ema_decay, (1 + t) / (10 + t)) = 0.1 at t = 0
      jax.tree.map(lambda average, first, live: np.testing.assert_allclose(
          average, 0.1 * first + 0.9 * live, rtol=1e-5, atol=1e-7),
          state.ema_generator, initial, state.generator)
  # After 60 steps the EMA (decay 0.999 at most) is near the live weights, not the initial ones.
  lag, moved = (optax.global_norm(jax.tree.map(jnp.subtract, a, state.generator))
                for a in (state.ema_generator, initial))
  assert float(lag) < 0.25 * float(moved)
  driver = latent.to_model_range(batch["driver_image"])
  mean_image = jnp.mean(driver, axis=(1, 2), keepdims=True) * jnp.ones_like(driver)
  baseline_psnr = float(jnp.mean(latent_losses.psnr(mean_image, driver)))
  final_psnr = float(metrics["psnr/reenacted"])
  print(f"l1 {losses[0]:.3f} -> {losses[-1]:.3f}; PSNR {final_psnr:.1f} dB vs mean-colour "
        f"baseline {baseline_psnr:.1f} dB")
  assert losses[-1] < losses[0] / 5
  assert final_psnr > baseline_psnr + 5.0


def test_colour_jitter_is_a_per_image_per_channel_affine_map():
  images = jax.random.uniform(jax.random.key(0), (4, 8, 8, 3), minval=-0.2, maxval=0.2)
  assert latent.jitter_colours(images, jax.random.key(1), 0.0) is images
  jittered = latent.jitter_colours(images, jax.random.key(1), 0.4)
  assert jittered.shape == images.shape and jittered.dtype == images.dtype
  np.testing.assert_array_equal(jittered, latent.jitter_colours(images, jax.random.key(1), 0.4))
  # Inside [-1, 1] (no clipping for these mid-grey inputs) each channel of each image is
  # gain * x + shift with gain in [exp(-0.4), exp(0.4)] and |shift| <= 0.2 in [0, 1] units.
  x, y = (np.asarray(a, np.float64).reshape(4, -1, 3) for a in (images, jittered))
  gains = np.empty((4, 3))
  for image in range(4):
    for channel in range(3):
      gain, intercept = np.polyfit(x[image, :, channel], y[image, :, channel], 1)
      np.testing.assert_allclose(y[image, :, channel], gain * x[image, :, channel] + intercept,
                                 atol=1e-5)
      shift = (intercept + 1 - gain) / 2  # y01 = gain * x01 + shift
      assert np.exp(-0.4) - 1e-5 <= gain <= np.exp(0.4) + 1e-5 and abs(shift) <= 0.2 + 1e-5
      gains[image, channel] = gain
  assert len(np.unique(gains.round(4))) == gains.size  # every image and channel its own draw
  bright = latent.jitter_colours(jnp.ones((2, 4, 4, 3)), jax.random.key(2), 1.0)
  assert float(bright.max()) <= 1.0 and float(bright.min()) >= -1.0


@pytest.mark.slow
def test_one_step_same_on_one_and_eight_devices(synthtalk_dir):
  config = tiny_config(synthtalk_dir)
  config.motion_colour_jitter = 0.3  # the step's randomness must not depend on the mesh either
  # Adam's first update is ~lr * sign(gradient): a gradient of ~0 whose sign depends on the
  # summation order would flip a parameter by 2 * lr. A larger epsilon keeps the update a smooth
  # function of the gradient, so float tolerance compares the sharded maths itself.
  config.optimizer.eps = 1e-3
  task = latent.make_task(config)
  batches = [next(task.train_iterator) for _ in range(3)]
  rng = loop.root_rng(config)

  def step_on(mesh):
    _, shardings, _ = loop.initial_state(task, config, mesh)
    data_sharding = input_pipeline.batch_sharding(mesh, config.sharding_rules)
    train_step = jax.jit(task.train_step, in_shardings=(shardings, data_sharding, None, None),
                         out_shardings=(shardings, None))
    return lambda state, batch, step: train_step(
        jax.device_put(state, shardings), input_pipeline.make_global_batch(batch, data_sharding),
        jax.random.fold_in(rng, step), task.frozen)

  # Two warm-up steps on one device move the state off the initialisation, where the identity
  # warp samples exactly at voxel centres: there trilinear sampling has a kink, and a one-ulp
  # difference in a coordinate picks the other one-sided derivative.
  one_device = one_device_mesh()
  state = loop.initial_state(task, config, one_device)[2]()
  single_device_step = step_on(one_device)
  for step in range(2):
    state, _ = single_device_step(state, batches[step], step)
  state = jax.device_get(state)
  single, single_metrics = single_device_step(state, batches[2], 2)
  sharded, sharded_metrics = step_on(
      sharding_lib.create_mesh({"data": 2, "fsdp": 4, "model": 1}))(state, batches[2], 2)
  kernel = sharded.generator["decoder"]["projection"]["conv"]["kernel"]  # 32 channels / 4 fsdp
  assert kernel.sharding.spec[-1] == "fsdp" and len(kernel.sharding.device_set) == 8
  for name in single_metrics:
    # The losses agree to 1e-4. The gradient norm sums the squares of gradients that differ by
    # up to 1% per leaf between the two programs (see below): 2.6e-4 apart on 2026-12-03, once
    # the standardised expression targets made it ~78. A sharding bug moves it by O(1).
    np.testing.assert_allclose(sharded_metrics[name], single_metrics[name],
                               rtol=1e-3 if name == "generator_grad_norm" else 1e-4,
                               err_msg=name)
  # Every leaf of the state (parameters, both Adam moments, EMA) must have made the same change
  # in this step, to 5% of that change in L2 norm over the leaf: a sharding bug (a missing or
  # doubled reduction, a wrong slice) changes the affected leaves by the order of their update.
  # With jax 0.10.2 on CPU the two programs' updates differ by up to 1% in this norm (other
  # convolution and reduction orders). An element-wise bound would not hold: where an element's
  # gradient is a near-cancellation (a discriminator kernel entry of 2.9e-4 beside entries of
  # 1.2e-2), the two orders give gradients 20% apart while the leaf's agree to 0.15%.
  # The floor covers float32 rounding of the stored values (a few ulps of the leaf's magnitude
  # per element) and quantities whose true change is 0 (discriminator biases before instance
  # norm: gradients of ~1e-9 that are rounding noise).
  paths_and_leaves = jax.tree_util.tree_flatten_with_path(single)[0]
  for (path, one), eight, before in zip(paths_and_leaves, jax.tree.leaves(sharded),
                                        jax.tree.leaves(state)):
    one, eight, before = (np.asarray(leaf, np.float64) for leaf in (one, eight, before))
    change = np.linalg.norm(one - before)
    rounding = (4 * np.spacing(np.float32(np.abs(before).max(initial=0.0))) + 1e-8) * np.sqrt(
        one.size)
    np.testing.assert_array_less(np.linalg.norm(one - eight), 0.05 * change + rounding,
                                 err_msg=jax.tree_util.keystr(path))


@pytest.mark.slow
def test_sigterm_resume_equals_uninterrupted_run(synthtalk_dir, tmp_path):
  config = tiny_config(synthtalk_dir, total_steps=4, eval_every_steps=1)
  config.motion_colour_jitter = 0.3  # a step that draws randomness (fold_in of the step) resumes
  # Two devices: the state is FSDP-sharded (a sharded save and restore) while Orbax's per-shard
  # work stays small; the 8-device program is checked against one device above.
  mesh = sharding_lib.create_mesh({"data": 1, "fsdp": 2, "model": 1}, jax.devices()[:2])
  straight = loop.train(config, str(tmp_path / "straight"),
                        dataclasses.replace(latent.make_task(config), evaluate=None), mesh)

  def terminate_at_step_1(state, step, writer):  # pylint: disable=unused-argument
    if step == 1:
      os.kill(os.getpid(), signal.SIGTERM)

  workdir = str(tmp_path / "interrupted")
  stopped = loop.train(config, workdir, dataclasses.replace(
      latent.make_task(config), evaluate=terminate_at_step_1), mesh)
  assert int(stopped.step) == 2
  resumed = loop.train(config, workdir, dataclasses.replace(latent.make_task(config),
                                                            evaluate=None), mesh)
  assert int(resumed.step) == 4
  assert_trees_equal(straight, resumed)  # generator, discriminator, both Adam states, EMA


class RecordingWriter:
  """Keeps what an evaluation writes."""

  def __init__(self):
    self.scalars, self.images = {}, {}

  def write_scalars(self, step, scalars):
    self.scalars.update(scalars)

  def write_images(self, step, images):
    self.images.update(images)


def test_evaluation_writes_psnr_ssim_and_an_image_grid(synthtalk_dir):
  config = tiny_config(synthtalk_dir, eval_every_steps=1)
  task = latent.make_task(config)
  state = jax.jit(lambda rng: nn.meta.unbox(task.init_state(rng)))(loop.root_rng(config))
  writer = RecordingWriter()
  task.evaluate(state, 1, writer)
  assert set(writer.scalars) == {"eval/psnr_self", "eval/psnr_reenacted",
                                 "eval/psnr_mean_colour", "eval/ssim_self",
                                 "eval/ssim_reenacted"}
  assert all(np.isfinite(value) for value in writer.scalars.values())
  assert all(-1.0 <= writer.scalars[f"eval/ssim_{name}"] < 0.9 for name in ("self", "reenacted"))
  # The untrained model draws no face: it does not beat each face's flat mean colour.
  assert writer.scalars["eval/psnr_self"] < writer.scalars["eval/psnr_mean_colour"]
  (grid,) = writer.images.values()
  assert grid.shape == (1, 2 * 64, 6 * 64, 3) and grid.dtype == np.uint8


def test_a_test_split_of_one_speaker_builds_the_evaluation_with_train_cross_identities(
    tmp_path, caplog):
  """SynthTalk of 4 speakers puts one in the test split (`data_prep.synthtalk --num_speakers=4`):
  the evaluation, whose setup refused such a split, is built with its cross-identity frames
  from the train split (what it then computes is the same as for any split: see
  test_evaluation_writes_psnr_and_an_image_grid)."""
  fake_clips.make_data_dir(str(tmp_path), num_speakers=4, test_speakers=1)
  config = tiny_config(str(tmp_path), eval_every_steps=1)
  with caplog.at_level(logging.INFO):
    task = latent.make_task(config)
  assert task.evaluate is not None
  assert "split 'test'" in caplog.text and "one speaker (spk3)" in caplog.text
  assert "from split 'train'" in caplog.text


def one_term_setup(synthtalk_dir, term_on: str):
  """The tiny model's initial parameters, a train batch of 2 and weights with only `term_on`
  at 1: (config, networks, weights, params, batch, images in [-1, 1])."""
  config = tiny_config(synthtalk_dir)
  networks = latent.Networks.from_config(config)
  weights = {term: 0.0 for term in latent.TERM_NETWORK}
  weights[term_on] = 1.0
  params = nn.meta.unbox(latent.make_init_state(networks, config)[0](jax.random.key(0)).generator)
  batch = next(input_pipeline.stage1_iterator(synthtalk_dir, "train", batch_size=2,
                                              image_size=64, seed=0))
  images = {name: latent.to_model_range(batch[f"{name}_image"])
            for name in ("source", "driver", "cross_identity")}
  return config, networks, weights, params, batch, images


def test_identity_cycle_reads_the_cross_reenactment_with_frozen_identity_weights(synthtalk_dir):
  config, networks, weights, params, _, images = one_term_setup(synthtalk_dir, "identity_cycle")
  encode_identity = autoencoder_lib.FaceAutoencoder.encode_identity

  def term(params):
    total, (terms, _) = latent.generator_loss(networks, weights, config, params, None, {},
                                              images, jax.random.key(1))
    return total, terms["identity_cycle"]

  def by_hand(params):
    """1 - cos(z_id of the source, z_id re-read from the cross reenactment), both reads with
    the initial weights held constant: only the render carries a gradient."""
    outputs = latent.generator_outputs(networks.autoencoder, params, images["source"],
                                       images["driver"], images["cross_identity"])
    source = networks.autoencoder.apply({"params": initial}, images["source"],
                                        method=encode_identity)
    reread = networks.autoencoder.apply({"params": initial}, outputs["cross_reenacted"],
                                        method=encode_identity)
    cosine = jnp.sum(source * reread, axis=-1) / (
        jnp.linalg.norm(source, axis=-1) * jnp.linalg.norm(reread, axis=-1))
    return jnp.mean(1.0 - cosine)

  initial = params
  (total, identity_cycle), term_grads = jax.jit(jax.value_and_grad(term, has_aux=True))(params)
  hand_value, hand_grads = jax.jit(jax.value_and_grad(by_hand))(params)
  assert total == identity_cycle and 0.0 < float(identity_cycle) < 2.0  # the only term on
  np.testing.assert_allclose(identity_cycle, hand_value, rtol=1e-5)
  for (path, got), want in zip(jax.tree_util.tree_flatten_with_path(term_grads)[0],
                               jax.tree.leaves(hand_grads)):
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-7,
                               err_msg=jax.tree_util.keystr(path))
  assert float(optax.global_norm(term_grads["decoder"])) > 0.0


def test_detached_expression_entries_learn_from_the_expression_term_alone(synthtalk_dir):
  config, networks, weights, params, batch, images = one_term_setup(synthtalk_dir, "l1")
  images["expression"] = jnp.concatenate(
      [batch[f"{name}_expression"] for name in ("source", "driver", "cross_identity")])
  supervised = input_pipeline.EXPRESSION_SIZE  # tiny carries every measure
  assert config.model.dyn_dim > supervised  # tiny: free entries after the supervised ones
  # At init the flow heads are zero, so z_dyn does not reach the render yet: perturbed weights.
  leaves, treedef = jax.tree.flatten(params)
  params = jax.tree.unflatten(treedef, [
      leaf + 0.02 * jax.random.normal(jax.random.key(index), leaf.shape, leaf.dtype)
      for index, leaf in enumerate(leaves)])

  def head_grad(detach: bool, weights: dict) -> np.ndarray:
    """Gradient of the weighted terms on the dynamics head's kernel: [C, dyn_dim]."""
    config.loss.detach_expression_codes = detach
    grads = jax.jit(jax.grad(lambda params: latent.generator_loss(
        networks, weights, config, params, None, {}, images, jax.random.key(1))[0]))(params)
    return np.asarray(grads["motion_encoder"]["dynamics_head"]["dense"]["kernel"])

  reconstruction = head_grad(False, weights)  # the L1 alone, every entry attached
  expression = head_grad(False, {term: 0.0 for term in weights} | {"expression": 1.0})
  detached = head_grad(True, weights | {"expression": 1.0})  # both terms, entries detached
  # The reconstruction reaches every entry, the expression term only the supervised ones.
  assert np.abs(reconstruction[:, :supervised]).max() > 0
  np.testing.assert_array_equal(expression[:, supervised:], 0.0)
  # Detached, the supervised entries learn from the expression term alone, the free ones from
  # the reconstruction as before.
  np.testing.assert_allclose(detached[:, :supervised], expression[:, :supervised], rtol=1e-5,
                             atol=1e-9)
  np.testing.assert_allclose(detached[:, supervised:], reconstruction[:, supervised:],
                             rtol=1e-5, atol=1e-9)
  # Without the expression term nothing would train them: refused.
  small = latent_config.get_config("small")
  assert latent.detached_entries(small) == 1  # its mouth entry
  small.loss.expression = 0.0
  with pytest.raises(ValueError, match="detach_expression_codes.*loss.expression"):
    latent.loss_weights(small)


def test_dynamics_locality_compares_both_dynamics_transfers_with_the_source_outside_its_mask(
    synthtalk_dir):
  """The term is the L1 of D(V_i, id_i, pose_i, dyn_j) and D(V_i, id_i, pose_i, dyn_d) against
  I_i over the pixels outside the source's expression mask, each decoded on its own."""
  config, networks, weights, params, batch, images = one_term_setup(synthtalk_dir,
                                                                     "dynamics_locality")
  images["source_expression_mask"] = jnp.asarray(batch["source_expression_mask"])
  assert 0 < batch["source_expression_mask"].mean() < 0.6
  total, (terms, _) = latent.generator_loss(networks, weights, config, params, None, {}, images,
                                            jax.random.key(1))
  model = networks.autoencoder
  variables = {"params": params}
  codes = {name: model.apply(variables, images[name], method=model.encode_motion)
           for name in ("source", "driver", "cross_identity")}
  volume, identity = model.apply(variables, images["source"], motion=codes["source"],
                                 method=model.encode_appearance)
  outside = 1.0 - images["source_expression_mask"].astype(np.float32)[..., None]  # [B, S, S, 1]
  errors = []
  for driver in ("driver", "cross_identity"):
    transfer = model.apply(variables, volume, identity, codes["source"][0], codes[driver][1],
                           method=model.decode)
    errors.append(np.abs(np.asarray(transfer) - np.asarray(images["source"])) * outside)
  by_hand = np.sum(errors) / (2 * 3 * np.sum(outside))
  assert float(total) == float(terms["dynamics_locality"]) > 0.0  # the only term on
  np.testing.assert_allclose(terms["dynamics_locality"], by_hand, rtol=1e-5)


def test_a_step_decodes_only_what_its_active_terms_read(synthtalk_dir):
  config, networks, weights, params, _, images = one_term_setup(synthtalk_dir, "l1")
  weights.update(head_pose=1.0, expression=1.0, region_l1=1.0, pose_decorrelation=1.0)
  assert latent.renders_needed(weights) == ("reenacted",)
  images["head_pose"] = jnp.zeros((6, 3))
  images["expression"] = jnp.zeros((6, 4))
  images["driver_region_mask"] = jnp.ones((2, 64, 64))
  _, (terms, outputs) = latent.generator_loss(networks, weights, config, params, None, {},
                                              images, jax.random.key(1))
  rendered = {name for name in latent.RENDERS if name in outputs}
  assert rendered == {"reenacted"} and "cross_identity_dyn" not in outputs
  assert outputs["z_pose"].shape[0] == 4  # source and driver read; not the cross-identity frame
  assert set(terms) == {"l1", "head_pose", "expression", "region_l1", "pose_decorrelation"}
  weights.update(transfer_cycle=1.0)
  assert latent.renders_needed(weights) == ("reenacted", "dynamics_transfer")
  weights.update(dynamics_locality=1.0, pairwise_l1=1.0, identity_cycle=1.0)
  assert latent.renders_needed(weights) == latent.RENDERS
