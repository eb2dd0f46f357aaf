"""Stage-2 training: motion-record windows, paper-size shapes, overfitting, devices, exact resume,
checkpointed statistics, data checks, evaluation and the command line."""

import dataclasses
import glob
import os
import re
import signal
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import motion as motion_config
from tests import fake_motion
from tests.test_training_loop import assert_trees_equal
from tests.test_training_loop import one_device_mesh
from vasa_jax.data import input_pipeline
from vasa_jax.diffusion import conditioning
from vasa_jax.models import motion_dit
from vasa_jax.trainers import motion
from vasa_jax.training import checkpoint as checkpoint_lib
from vasa_jax.training import loop
from vasa_jax.training import sharding as sharding_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def motion_data(tmp_path_factory):
  """(data dir, {split: records}) of 4 training and 2 test clips of 60 frames."""
  path = str(tmp_path_factory.mktemp("motion"))
  return path, fake_motion.make_motion_data_dir(path)


def tiny_config(data_dir, **overrides):
  config = motion_config.get_config("tiny")
  config.data_dir = data_dir
  config.batch_size = 8
  config.total_steps = 4
  config.log_every_steps = 1
  config.checkpoint_every_steps = 2
  config.eval_every_steps = 0
  config.optimizer.warmup_steps = 0  # a full-size first update
  config.eval.num_clips = 0  # rendered samples: tests/test_motion_samples.py
  config.update(overrides)
  return config


def eight_device_mesh():
  """The mesh of every multi-device test here (the same programs compile once per session)."""
  return sharding_lib.create_mesh({"data": -1, "fsdp": 2, "model": 1})


@pytest.fixture(scope="module")
def tiny_train_step(motion_data):
  """The train step of `tiny_config`, one function object for every test that runs it, so that
  JAX traces and compiles it once per mesh in this process."""
  return motion.make_task(tiny_config(motion_data[0])).train_step


def initial_state(task, config):
  """The task's initial state, unboxed, on one device, as the loop builds it."""
  return loop.initial_state(task, config, one_device_mesh())[2]()


def test_stage2_windows_of_motion_records(motion_data):
  data_dir, split_records = motion_data
  clips = {int(r["distance_main"]): r for r in split_records["train"]}
  batch = next(input_pipeline.stage2_iterator(
      data_dir, "train", batch_size=8, window=25, num_previous=5,
      frame_fields=motion.FRAME_FIELDS, clip_fields=motion.CLIP_FIELDS, with_audio=True,
      seed=0))
  assert batch["motion"].shape == (8, 25, 23) and batch["motion_previous"].shape == (8, 5, 23)
  assert batch["audio_features"].shape == (8, 25, 40) and batch["emotion"].shape == (8, 8)
  assert batch["gaze_main"].shape == (8, 2) and batch["distance_main"].shape == (8,)
  assert batch["audio"].shape == (8, 25 * fake_motion.SAMPLES_PER_FRAME)
  for i in range(8):
    record = clips[int(batch["distance_main"][i])]
    start = int(batch["window_start"][i])
    previous = np.maximum(np.arange(start - 5, start), 0)
    np.testing.assert_array_equal(batch["motion"][i], record["motion"][start:start + 25])
    np.testing.assert_array_equal(batch["motion_previous"][i], record["motion"][previous])
    np.testing.assert_array_equal(batch["audio_features"][i],
                                  record["audio_features"][start:start + 25].astype(np.float32))
    np.testing.assert_array_equal(batch["gaze_main"][i], record["gaze_main"])


def test_paper_size_init_and_train_step_trace():
  config = motion_config.get_config()
  model = motion_dit.MotionDiT.from_config(config.model)
  optimizer, learning_rate = motion.make_optimizer(config.optimizer, config.total_steps)
  statistics = {name: {"mean": np.zeros(shape, np.float32), "std": np.ones(shape, np.float32)}
                for name, shape in (("motion", (263,)), ("audio_features", (768,)),
                                    ("gaze_main", (2,)), ("distance_main", ()))}
  abstract = jax.eval_shape(motion.make_init_state(model, optimizer, statistics),
                            jax.random.key(0))
  parameters = sharding_lib.parameter_count(abstract.params)
  print(f"paper-size motion DiT: {parameters:,} parameters")
  assert 20e6 < parameters < 35e6
  state = jax.tree.map(lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype),
                       nn.meta.unbox(abstract))
  assert state.statistics["distance_main"]["std"].shape == ()

  def array(*shape, dtype=jnp.float32):
    return jax.ShapeDtypeStruct((2,) + shape, dtype)
  batch = {"motion": array(100, 263), "motion_previous": array(10, 263),
           "audio_features": array(100, 768), "audio_features_previous": array(10, 768),
           "gaze_main": array(2), "distance_main": array(), "emotion": array(8),
           "previous_mask": array(10, dtype=bool)}
  train_step = motion.make_train_step(model, config, optimizer, learning_rate)
  new_state, metrics = jax.eval_shape(train_step, state, batch, jax.random.key(1), None)
  assert jax.tree.structure(new_state) == jax.tree.structure(state)
  assert set(metrics) == {"loss", "loss/x0", "loss/velocity", "grad_norm", "learning_rate"}
  assert all(value.shape == () for value in metrics.values())


def test_tiny_model_overfits_a_batch(motion_data):
  config = tiny_config(motion_data[0])
  config.model.dropout = 0.0
  for key in conditioning.DEFAULT_PROBABILITIES:
    config.diffusion[key] = 0.0
  config.optimizer.update(learning_rate=2e-3, final_learning_rate=2e-3)
  task = motion.make_task(config)
  batch = next(task.train_iterator)
  state = initial_state(task, config)
  train_step = jax.jit(task.train_step)
  losses = []
  for step in range(150):
    state, metrics = train_step(state, batch, jax.random.fold_in(loop.root_rng(config), step),
                                None)
    losses.append(float(metrics["loss"]))
  first, last = np.mean(losses[:10]), np.mean(losses[-25:])
  print(f"x0 loss (normalised motion) {first:.3f} -> {last:.4f}")
  assert last < first / 10


def test_ema_follows_the_live_weights_from_the_first_step(motion_data, tiny_train_step):
  """The EMA's decay warms up as min(ema_decay, (1 + t) / (10 + t)): after the first update it is
  0.1 * initial + 0.9 * live, and after 40 steps it is near the live weights (a fixed decay of
  0.99 would still hold 67% of the initialisation)."""
  config = tiny_config(motion_data[0])
  task = motion.make_task(config)
  state = initial_state(task, config)
  initial = jax.device_get(state.params)
  train_step = jax.jit(tiny_train_step)
  for step in range(40):
    state, _ = train_step(state, next(task.train_iterator),
                          jax.random.fold_in(loop.root_rng(config), step), None)
    if step == 0:
      jax.tree.map(lambda average, first, live: np.testing.assert_allclose(
          average, 0.1 * first + 0.9 * live, rtol=1e-5, atol=1e-7),
          state.ema_params, initial, state.params)
  def distance(a, b):
    return np.sqrt(sum(np.sum((np.asarray(x) - np.asarray(y)) ** 2)
                       for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))))
  lag = distance(state.ema_params, state.params) / distance(initial, state.params)
  print(f"EMA distance to the live weights after 40 steps: {lag:.3f} of the initialisation's")
  assert lag < 0.25


def step_on(mesh, train_step, task, config, state, batch, rng):
  """One step of `train_step` on `mesh`, jitted exactly as the loop jits it."""
  _, shardings, _ = loop.initial_state(task, config, mesh)
  data_sharding = input_pipeline.batch_sharding(mesh, config.sharding_rules)
  jitted = jax.jit(train_step, in_shardings=(shardings, data_sharding, None, None),
                   out_shardings=(shardings, None), donate_argnums=0)
  return jitted(jax.device_put(state, shardings),
                input_pipeline.make_global_batch(batch, data_sharding), rng, None)


def test_train_step_adds_the_velocity_term_with_its_weight(motion_data, tiny_train_step):
  """The loss is the x0 loss plus velocity_loss times the velocity term (same state, batch, rng),
  and both terms are logged whatever the weight."""
  metrics = {}
  for weight in (0.0, 1.0):
    config = tiny_config(motion_data[0])
    config.diffusion.velocity_loss = weight
    task = motion.make_task(config)
    # tiny_config's own weight is 1: that step is the one the other tests compile.
    train_step = tiny_train_step if weight == 1.0 else task.train_step
    _, step_metrics = step_on(one_device_mesh(), train_step, task, config,
                              initial_state(task, config), next(task.train_iterator),
                              loop.root_rng(config))
    metrics[weight] = jax.tree.map(float, step_metrics)
  for name in ("loss/x0", "loss/velocity"):
    np.testing.assert_allclose(metrics[1.0][name], metrics[0.0][name], rtol=1e-6, err_msg=name)
  assert metrics[0.0]["loss/velocity"] > 1e-4
  np.testing.assert_allclose(metrics[0.0]["loss"], metrics[0.0]["loss/x0"], rtol=1e-6)
  np.testing.assert_allclose(metrics[1.0]["loss"],
                             metrics[1.0]["loss/x0"] + metrics[1.0]["loss/velocity"], rtol=1e-6)


def test_one_step_same_on_one_and_eight_devices(motion_data, tiny_train_step):
  config = tiny_config(motion_data[0])
  assert config.diffusion.velocity_loss == 1.0
  task = motion.make_task(config)
  batch = next(task.train_iterator)
  rng = jax.random.fold_in(loop.root_rng(config), 7)

  state = jax.device_get(initial_state(task, config))
  single, single_metrics = step_on(one_device_mesh(), tiny_train_step, task, config, state,
                                   batch, rng)
  sharded, sharded_metrics = step_on(eight_device_mesh(), tiny_train_step, task, config, state,
                                     batch, rng)
  kernel = sharded.params["block_0"]["mlp_in"]["kernel"]  # logical ("embed", "mlp")
  assert kernel.sharding.spec[0] == "fsdp" and len(kernel.sharding.device_set) == 8
  for name in single_metrics:
    np.testing.assert_allclose(sharded_metrics[name], single_metrics[name], rtol=1e-5,
                               err_msg=name)
  # The attention key bias adds the same q.b to every logit of a query, which the softmax
  # ignores: its gradient is 0 up to rounding, and Adam scales that rounding noise, whose sign
  # depends on the summation order, to updates of up to the learning rate. It is checked against
  # that bound. Elsewhere too Adam divides a gradient by its own size, so the parameters get an
  # absolute tolerance of 1% of the learning rate, the rest float tolerance.
  def is_key_bias(path):
    return "['key']['bias']" in jax.tree_util.keystr(path)

  for tree in (single, sharded):
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree.params):
      if is_key_bias(path):
        assert np.max(np.abs(leaf)) <= config.optimizer.learning_rate
  single, sharded = [jax.tree_util.tree_map_with_path(
      lambda path, leaf: np.zeros(()) if is_key_bias(path) else leaf, tree)
      for tree in (single, sharded)]
  # The EMA, 0.9 of the new parameters after the first step (its warm-up), shares their
  # tolerance.
  for name in ("params", "ema_params"):
    assert_trees_equal(getattr(single, name), getattr(sharded, name), rtol=1e-4,
                       atol=1e-2 * config.optimizer.learning_rate)
  assert_trees_equal(single.replace(params=None, ema_params=None),
                     sharded.replace(params=None, ema_params=None), rtol=1e-4, atol=1e-6)
  # The step moved the parameters.
  assert not np.allclose(single.params["block_0"]["mlp_in"]["kernel"],
                         state.params["block_0"]["mlp_in"]["kernel"])


def test_sigterm_resume_equals_uninterrupted_run(motion_data, tiny_train_step, tmp_path):
  data_dir = motion_data[0]
  config = tiny_config(data_dir, eval_every_steps=1)

  def run(workdir, evaluate=None):
    """Trains with a new task, as a restarted job builds one (sharing only the step function)."""
    task = dataclasses.replace(motion.make_task(config), train_step=tiny_train_step,
                               evaluate=evaluate)
    return loop.train(config, str(tmp_path / workdir), task, eight_device_mesh())

  def terminate_at_step_1(state, step, writer):  # pylint: disable=unused-argument
    if step == 1:
      os.kill(os.getpid(), signal.SIGTERM)

  straight = run("straight")
  stopped = run("interrupted", evaluate=terminate_at_step_1)
  assert int(stopped.step) == 2
  resumed = run("interrupted")
  assert int(resumed.step) == 4
  assert_trees_equal(straight, resumed)  # parameters, Adam state, EMA, statistics
  # The checkpoints hold the training split's statistics where the sampler reads them.
  restored_config, restored, step = checkpoint_lib.restore_for_inference(
      str(tmp_path / "interrupted"), "motion")
  assert step == 4 and restored_config.model.motion_dim == 23
  assert_trees_equal(restored["statistics"], motion.compute_statistics(
      data_dir, "train", config.diffusion.min_std))
  assert_trees_equal(restored["ema_params"], resumed.ema_params)


def test_statistics_come_from_the_train_split(motion_data):
  data_dir, split_records = motion_data
  config = tiny_config(data_dir)
  statistics = motion.compute_statistics(data_dir, "train", config.diffusion.min_std)
  train = split_records["train"]
  for name, values in (
      ("motion", np.concatenate([r["motion"] for r in train])),
      ("audio_features", np.concatenate([r["audio_features"] for r in train])),
      ("gaze_main", np.stack([r["gaze_main"] for r in train])),
      ("distance_main", np.stack([r["distance_main"] for r in train]))):
    values = values.astype(np.float64)
    np.testing.assert_allclose(statistics[name]["mean"], values.mean(0), rtol=1e-5, atol=1e-6,
                               err_msg=name)
    np.testing.assert_allclose(statistics[name]["std"],
                               np.maximum(values.std(0), config.diffusion.min_std), rtol=1e-4,
                               err_msg=name)
  # The training clips are numbered 1..4 (distance_main), the test clips 5 and 6.
  assert statistics["distance_main"]["mean"] == pytest.approx(2.5)
  # A capped pass reads evenly spaced clips: here only the first.
  capped = motion.compute_statistics(data_dir, "train", config.diffusion.min_std, max_clips=1)
  assert capped["distance_main"]["mean"] == 1.0


def test_model_width_that_does_not_fit_the_data_is_named(motion_data):
  config = tiny_config(motion_data[0])
  config.model.motion_dim = 30
  with pytest.raises(ValueError, match=r"config.model.motion_dim=30 .* have 23 \(manifest"):
    motion.make_task(config)
  config = tiny_config(motion_data[0])
  config.model.emotion_dim = 0
  with pytest.raises(ValueError, match=r"config.model.emotion_dim=0 .* have 8"):
    motion.make_task(config)


def test_evaluation_writes_the_ema_x0_loss(motion_data):
  config = tiny_config(motion_data[0], eval_every_steps=1)
  task = motion.make_task(config)
  state = initial_state(task, config)

  class RecordingWriter:
    def __init__(self):
      self.scalars = []

    def write_scalars(self, step, scalars):
      self.scalars.append(scalars)

  writer = RecordingWriter()
  task.evaluate(state, 1, writer)
  # Only the EMA parameters count, and the windows, noise and times are fixed.
  task.evaluate(state.replace(params=jax.tree.map(jnp.zeros_like, state.params)), 2, writer)
  first, second = writer.scalars
  assert set(first) == {"eval/x0_loss", "eval/x0_loss_t100", "eval/x0_loss_t500",
                        "eval/x0_loss_t900", "eval/x0_loss_of_the_mean"}
  assert first == second
  assert all(np.isfinite(value) and value > 0 for value in first.values())
  # Predicting the mean: the mean square of the normalised eval windows.
  iterator = input_pipeline.stage2_iterator(
      config.data_dir, "test", batch_size=config.batch_size, window=25, num_previous=5,
      frame_fields=motion.FRAME_FIELDS, clip_fields=motion.CLIP_FIELDS, with_audio=False,
      seed=config.seed, shuffle=False, process_index=0, process_count=1)
  statistics = jax.device_get(state.statistics["motion"])
  squares = [np.mean(((next(iterator)["motion"] - statistics["mean"]) / statistics["std"]) ** 2)
             for _ in range(motion.EVAL_NUM_BATCHES)]
  np.testing.assert_allclose(first["eval/x0_loss_of_the_mean"], np.mean(squares), rtol=1e-5)
  task.evaluate(state.replace(ema_params=jax.tree.map(jnp.zeros_like, state.ema_params)), 3,
                writer)
  assert writer.scalars[2]["eval/x0_loss"] != first["eval/x0_loss"]


@pytest.mark.slow
def test_motion_tiny_trains_from_the_command_line(tmp_path):
  data_dir = tmp_path / "motion"
  fake_motion.make_motion_data_dir(str(data_dir))
  workdir = tmp_path / "work"
  # `tiny_config` and `eight_device_mesh` on the command line, with this session's compilation
  # cache: the subprocess reuses the train step the other tests compiled.
  result = subprocess.run(
      [sys.executable, "-m", "vasa_jax.train", "--config=configs/motion.py:tiny",
       f"--workdir={workdir}", f"--config.data_dir={data_dir}", "--config.total_steps=4",
       "--config.batch_size=8", "--config.log_every_steps=1", "--config.eval_every_steps=4",
       "--config.checkpoint_every_steps=2", "--config.optimizer.warmup_steps=0",
       "--config.mesh.fsdp=2"],
      cwd=REPO, capture_output=True, text=True, timeout=600, check=False,
      env=dict(os.environ, JAX_COMPILATION_CACHE_DIR=jax.config.jax_compilation_cache_dir))
  assert result.returncode == 0, result.stderr[-3000:]
  assert (workdir / "checkpoints" / "4").is_dir()
  assert checkpoint_lib.read_config(str(workdir)).stage == "motion"
  assert glob.glob(str(workdir / "events.out.tfevents.*"))
  logged = result.stderr  # the scalars are logged as well as written for TensorBoard
  assert all(name in logged for name in ("loss=", "grad_norm=", "learning_rate=",
                                         "eval/x0_loss="))
  # What the user sees: the compilation announced and timed, the bar, no Orbax INFO lines.
  assert "compiling the train step" in logged and "train step compiled in" in logged
  assert re.search(r"train: 100%.*4/4 .*loss=", logged.replace("\r", "\n"))
  assert "checkpoint_manager.py" not in logged and (workdir / "metrics.json").is_file()
