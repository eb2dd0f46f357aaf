"""The papers' recipe as configs (`configs/latent.py:paper`, `configs/motion.py:paper`), this
project's additions as `:extended`, and MegaPortraits' gaze loss: the MPIIGaze LeNet against a
PyTorch re-creation, its weight file, the eye patches, and the term in a stage-1 step."""

import logging
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from configs import latent as latent_config
from configs import motion as motion_config
from data_prep import convert_weights
from vasa_jax.data import input_pipeline
from vasa_jax.models import gaze
from vasa_jax.models import motion_dit
from vasa_jax.models import perceptual
from vasa_jax.models import pretrained
from vasa_jax.trainers import latent
from vasa_jax.trainers import motion
from vasa_jax.training import sharding as sharding_lib

# The stage-1 terms and weights MegaPortraits (and, for the last three, VASA-1) train with.
PUBLISHED_LATENT_WEIGHTS = {"vgg": 20.0, "face": 4.0, "gaze": 5.0, "adversarial": 1.0,
                            "feature_matching": 40.0, "cycle": 2.0, "pairwise_l1": 10.0,
                            "pairwise_vgg": 10.0, "identity": 5.0}
# This project's additions and their weights in `:extended`.
LATENT_ADDITIONS = {"l1": 10.0, "head_pose": 10.0, "expression": 10.0, "transfer_cycle": 2.0,
                    "pose_decorrelation": 10.0}


class TorchGazeLeNet(torch.nn.Module):
  """MPIIGaze's LeNet as hysts/pytorch_mpiigaze lays it out (models/mpiigaze/lenet.py)."""

  def __init__(self):
    super().__init__()
    self.conv1 = torch.nn.Conv2d(1, 20, kernel_size=5, stride=1, padding=0)
    self.conv2 = torch.nn.Conv2d(20, 50, kernel_size=5, stride=1, padding=0)
    self.fc1 = torch.nn.Linear(3600, 500)
    self.fc2 = torch.nn.Linear(502, 2)

  def forward(self, eyes, head_pose):
    pool1 = torch.nn.functional.max_pool2d(self.conv1(eyes), kernel_size=2, stride=2)
    pool2 = torch.nn.functional.max_pool2d(self.conv2(pool1), kernel_size=2, stride=2)
    hidden = torch.relu(self.fc1(pool2.reshape(pool2.shape[0], -1)))
    return self.fc2(torch.cat([hidden, head_pose], dim=1)), [pool1, pool2, hidden]


@pytest.fixture(scope="module")
def gaze_release(tmp_path_factory):
  """(torch LeNet with random weights, its converted .npz): a state dict saved by torch.save,
  converted by `python -m data_prep.convert_weights --kind=gaze`."""
  torch.manual_seed(0)
  model = TorchGazeLeNet().eval()
  directory = tmp_path_factory.mktemp("gaze")
  torch.save({"model": model.state_dict()}, directory / "lenet.pth")
  result = subprocess.run(
      [sys.executable, "-m", "data_prep.convert_weights", "--kind=gaze",
       f"--input={directory / 'lenet.pth'}", f"--output={directory / 'gaze.npz'}"],
      capture_output=True, text=True, check=False)
  assert result.returncode == 0, result.stderr
  return model, str(directory / "gaze.npz")


def test_gaze_lenet_matches_torch(gaze_release):
  torch_model, path = gaze_release
  generator = np.random.default_rng(0)
  eyes = generator.uniform(0, 1, (3, gaze.PATCH_HEIGHT, gaze.PATCH_WIDTH, 1)).astype(np.float32)
  head_pose = generator.uniform(-0.5, 0.5, (3, 2)).astype(np.float32)
  angles, features = gaze.GazeLeNet().apply(pretrained.load_gaze(path), eyes, head_pose)
  with torch.no_grad():
    torch_angles, torch_features = torch_model(torch.from_numpy(eyes).permute(0, 3, 1, 2),
                                               torch.from_numpy(head_pose))
  np.testing.assert_allclose(angles, torch_angles.numpy(), rtol=1e-4, atol=1e-5)
  assert [f.shape for f in features] == [(3, 16, 28, 20), (3, 6, 12, 50), (3, 500)]
  for flax_feature, torch_feature in zip(features, torch_features):
    if torch_feature.ndim == 4:
      torch_feature = torch_feature.permute(0, 2, 3, 1)
    np.testing.assert_allclose(flax_feature, torch_feature.numpy(), rtol=1e-4, atol=1e-5)
  # The head pose enters fc2: another pose, another gaze.
  other, _ = gaze.GazeLeNet().apply(pretrained.load_gaze(path), eyes, head_pose + 0.3)
  assert not np.allclose(other, angles)


def test_gaze_loader_refuses_a_mis_shaped_tensor(gaze_release, tmp_path):
  _, path = gaze_release
  with np.load(path) as archive:
    tensors = dict(archive)
  tensors["fc1.weight"] = np.zeros((500, 3000), np.float32)
  np.savez(tmp_path / "bad.npz", **tensors)
  with pytest.raises(ValueError, match=r"'fc1\.weight' has shape \(500, 3000\) in the file but "
                     r"the model needs \(500, 3600\)"):
    pretrained.load_gaze(str(tmp_path / "bad.npz"))


def test_eye_patches_sample_the_boxes_bilinearly():
  # A linear ramp in x and y: bilinear sampling reproduces it exactly at every sample position.
  size = 32
  ys, xs = np.meshgrid(np.arange(size) + 0.5, np.arange(size) + 0.5, indexing="ij")
  grey = (0.01 * xs + 0.02 * ys)  # [S, S] in [0, 1]
  images = np.repeat((grey * 2 - 1)[None, :, :, None], 3, axis=-1).astype(np.float32)
  boxes = np.array([[[4.0, 2.0, 10.0, 12.0], [6.0, 14.0, 12.0, 30.0]]], np.float32)
  patches = np.asarray(gaze.eye_patches(jnp.asarray(images), jnp.asarray(boxes)))
  assert patches.shape == (2, gaze.PATCH_HEIGHT, gaze.PATCH_WIDTH, 1)
  for patch, (y0, x0, y1, x1) in zip(patches, boxes[0]):
    rows = y0 + (y1 - y0) * (np.arange(gaze.PATCH_HEIGHT) + 0.5) / gaze.PATCH_HEIGHT
    columns = x0 + (x1 - x0) * (np.arange(gaze.PATCH_WIDTH) + 0.5) / gaze.PATCH_WIDTH
    expected = 0.01 * columns[None, :] + 0.02 * rows[:, None]
    np.testing.assert_allclose(patch[..., 0], expected, atol=1e-5)


def test_eye_boxes_frame_each_eye():
  landmarks = np.zeros((68, 2))
  landmarks[36:42] = [[10, 20], [12, 19], [14, 19], [16, 20], [14, 21], [12, 21]]  # right eye
  landmarks[42:48] = [[30, 22], [32, 21], [34, 21], [36, 22], [34, 23], [32, 23]]  # left eye
  boxes = input_pipeline.eye_boxes(landmarks)
  assert boxes.shape == (2, 4) and boxes.dtype == np.float32
  width = input_pipeline.EYE_BOX_WIDTH * (6 + 1)  # corner to corner 6 pixels, + 1
  height = input_pipeline.EYE_BOX_ASPECT * width
  np.testing.assert_allclose(boxes[0], [20 - height / 2, 13 - width / 2, 20 + height / 2,
                                        13 + width / 2], rtol=1e-6)
  np.testing.assert_allclose(boxes[1], [22 - height / 2, 33 - width / 2, 22 + height / 2,
                                        33 + width / 2], rtol=1e-6)


def test_gaze_loss_sees_the_eyes_only(gaze_release):
  _, path = gaze_release
  variables = pretrained.load_gaze(path)
  generator = np.random.default_rng(1)
  target = generator.uniform(-1, 1, (2, 64, 64, 3)).astype(np.float32)
  boxes = np.tile(np.array([[20.0, 10.0, 29.0, 25.0], [20.0, 38.0, 29.0, 53.0]], np.float32),
                  (2, 1, 1))
  head = np.zeros((2, 2), np.float32)
  loss = lambda prediction: perceptual.gaze_loss(variables, prediction, target, boxes, head)
  assert float(loss(target)) == 0.0
  outside = target.copy()
  outside[:, 40:] = generator.uniform(-1, 1, outside[:, 40:].shape)  # below the eyes
  assert float(loss(outside)) == 0.0
  inside = target.copy()
  inside[:, 22:27, 12:50] = -1.0
  assert float(loss(inside)) > 0.0
  grads = jax.grad(loss)(jnp.asarray(inside))
  assert float(jnp.abs(grads[:, 20:30, 10:54]).sum()) > 0.0
  assert float(jnp.abs(grads[:, 40:]).sum()) == 0.0


def test_paper_configs_hold_the_published_recipes():
  for variant in ("paper", "paper_256"):
    config = latent_config.get_config(variant)
    for term, weight in PUBLISHED_LATENT_WEIGHTS.items():
      assert config.loss[term] == weight, term
    assert (config.loss.cycle_scale, config.loss.cycle_margin) == (5.0, 0.2)
    for term in latent.TERM_NETWORK:
      if term not in PUBLISHED_LATENT_WEIGHTS:
        assert config.loss[term] == 0.0, term
    assert config.motion_colour_jitter == 0.0 and not config.model.decoder.sees_dyn
    assert (config.optimizer.learning_rate, config.optimizer.final_learning_rate) == (2e-4, 1e-6)
  assert latent_config.get_config().image_size == 512  # `paper` is the default
  assert (latent_config.get_config("paper").total_steps,
          latent_config.get_config("paper").batch_size) == (300_000, 16)
  assert (latent_config.get_config("paper_256").total_steps,
          latent_config.get_config("paper_256").batch_size) == (200_000, 24)

  for variant, paper in (("extended", "paper"), ("extended_256", "paper_256")):
    extended, base = latent_config.get_config(variant), latent_config.get_config(paper)
    differing = {term for term in latent.TERM_NETWORK
                 if extended.loss[term] != base.loss[term]}
    assert differing == set(LATENT_ADDITIONS)
    assert {term: extended.loss[term] for term in differing} == LATENT_ADDITIONS
    assert extended.model == base.model

  paper_motion, extended_motion = (motion_config.get_config(), motion_config.get_config(
      "extended"))
  assert not paper_motion.model.carry_previous
  assert paper_motion.model.entry_blend_frames == 0.0
  assert paper_motion.diffusion.velocity_loss == 0.0
  assert (paper_motion.diffusion.drop_audio, paper_motion.diffusion.drop_previous) == (0.1, 0.5)
  assert (paper_motion.sampling.lambda_audio, paper_motion.sampling.lambda_gaze,
          paper_motion.sampling.num_steps) == (0.5, 1.0, 50)
  assert extended_motion.model.carry_previous and extended_motion.model.entry_blend_frames == 3.0
  assert extended_motion.diffusion.velocity_loss == 1.0
  for field in ("carry_previous", "entry_blend_frames"):
    paper_motion.model[field] = extended_motion.model[field]
  paper_motion.diffusion.velocity_loss = extended_motion.diffusion.velocity_loss
  assert paper_motion == extended_motion  # nothing else differs


@pytest.mark.parametrize("variant,size,parameters", [("paper", 512, (100e6, 300e6)),
                                                     ("paper_256", 256, (100e6, 300e6))])
def test_paper_size_stage1_state_traces(variant, size, parameters):
  """Abstract only (paper size never runs on a CPU): the train state with every published term,
  the gaze network's variables included."""
  config = latent_config.get_config(variant)
  config.pretrained.update(vgg19="abstract", arcface="abstract", gaze="abstract")
  networks = latent.Networks.from_config(config)
  weights = latent.loss_weights(config)
  assert {term for term, weight in weights.items() if weight} == set(PUBLISHED_LATENT_WEIGHTS)
  init_state, _, _ = latent.make_init_state(networks, config)
  abstract = jax.eval_shape(init_state, jax.random.key(0))
  assert parameters[0] < sharding_lib.parameter_count(abstract.generator) < parameters[1]
  gaze_variables = pretrained.abstract_variables(networks.gaze)
  assert sharding_lib.parameter_count(gaze_variables) == 20 * 25 + 20 + 50 * 500 + 50 + (
      3600 * 500 + 500 + 502 * 2 + 2)
  assert config.image_size == size


def test_paper_size_stage2_state_traces():
  config = motion_config.get_config("paper")
  model = motion_dit.MotionDiT.from_config(config.model)
  optimizer, _ = motion.make_optimizer(config.optimizer, config.total_steps)
  statistics = {name: {"mean": np.zeros(shape, np.float32), "std": np.ones(shape, np.float32)}
                for name, shape in (("motion", (263,)), ("audio_features", (768,)),
                                    ("gaze_main", (2,)), ("distance_main", ()))}
  abstract = jax.eval_shape(motion.make_init_state(model, optimizer, statistics),
                            jax.random.key(0))
  assert 20e6 < sharding_lib.parameter_count(abstract.params) < 35e6
  assert "carry" not in str(jax.tree_util.tree_structure(nn.meta.unbox(abstract.params)))


def tiny_batch(seed=0, batch=4, size=64):
  generator = np.random.default_rng(seed)
  values = {}
  for name in ("source", "driver", "cross_identity"):
    values[f"{name}_image"] = generator.integers(0, 256, (batch, size, size, 3), np.uint8)
    values[f"{name}_head_pose"] = generator.uniform(-20, 20, (batch, 3)).astype(np.float32)
    values[f"{name}_gaze"] = generator.uniform(-20, 20, (batch, 2)).astype(np.float32)
    values[f"{name}_expression"] = generator.uniform(0, 1, (batch, 4)).astype(np.float32)
  values["driver_region_mask"] = np.ones((batch, size, size), np.uint8)
  values["source_expression_mask"] = np.ones((batch, size, size), np.uint8)
  values["driver_eye_boxes"] = np.tile(
      np.array([[20.0, 10.0, 29.0, 25.0], [20.0, 38.0, 29.0, 53.0]], np.float32), (batch, 1, 1))
  values["speaker"] = np.arange(batch, dtype=np.int32)
  values["cross_identity_speaker"] = np.arange(batch, dtype=np.int32) + 1
  return values


def test_tiny_step_with_the_gaze_loss(gaze_release):
  """One tiny train step with the gaze loss on (one compilation); the terms that need more
  renders than the reenacted one are off (they compile several times longer). The total is the
  weighted sum of the terms, the gaze term with the configured weight among them."""
  _, path = gaze_release

  def config_with_gaze(weight):
    config = latent_config.get_config("tiny")
    config.pretrained.gaze = path
    config.loss.gaze = weight
    config.loss.update(pairwise_l1=0.0, pairwise_vgg=0.0, transfer_cycle=0.0, cycle=0.0,
                       identity=0.0)
    return config

  assert latent.loss_weights(config_with_gaze(50.0))["gaze"] == 50.0
  config = config_with_gaze(5.0)
  networks = latent.Networks.from_config(config)
  weights = latent.loss_weights(config)
  assert weights["gaze"] == 5.0
  assert latent.renders_needed(weights) == ("reenacted",)
  init_state, generator_tx, discriminator_tx = latent.make_init_state(networks, config)
  state = nn.meta.unbox(jax.jit(init_state)(jax.random.key(0)))
  frozen = latent.load_frozen(config)
  assert frozen["gaze"] is not None and frozen["vgg19"] is None
  step = jax.jit(latent.make_train_step(networks, config, weights, generator_tx,
                                        discriminator_tx))
  _, metrics = step(state, tiny_batch(), jax.random.key(1), frozen)
  metrics = jax.device_get(metrics)
  assert np.isfinite(metrics["loss/generator_total"]) and metrics["loss/gaze"] > 0
  terms = {name[len("loss/"):]: float(value) for name, value in metrics.items()
           if name.startswith("loss/") and name[len("loss/"):] in weights}
  assert "gaze" in terms
  weighted = sum(weights[name] * value for name, value in terms.items())
  assert float(metrics["loss/generator_total"]) == pytest.approx(weighted, rel=1e-5)
  assert 5.0 * terms["gaze"] > 1e-3 * weighted  # the gaze term is a visible part of the total


def test_without_the_gaze_weights_the_term_is_off_in_one_log_line(caplog):
  config = latent_config.get_config("paper")
  config.pretrained.update(vgg19="abstract", arcface="abstract")
  with caplog.at_level(logging.WARNING):
    weights = latent.loss_weights(config)
  assert weights["gaze"] == 0.0 and weights["vgg"] == 20.0
  lines = [line for line in caplog.text.splitlines() if "gaze" in line]
  assert len(lines) == 1
  assert "loss term 'gaze' (weight 5) is OFF: config.pretrained.gaze names no weight file" in (
      lines[0])
