"""The shared training plumbing: mesh, logical sharding, exact resume, devices, NaN stop, logs."""

import glob
import logging
import os
import re
import signal

from absl import logging as absl_logging
import jax
import numpy as np
import pytest

from tests import fake_clips
from tests import toy_task
from vasa_jax.training import checkpoint as checkpoint_lib
from vasa_jax.training import loop
from vasa_jax.training import run_metrics
from vasa_jax.training import sharding as sharding_lib


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("clips"))
  fake_clips.make_data_dir(path)
  return path


def one_device_mesh():
  return sharding_lib.create_mesh({"data": 1, "fsdp": 1, "model": 1}, jax.devices()[:1])


def assert_trees_equal(a, b, **tolerance):
  leaves_a, leaves_b = jax.tree.leaves(a), jax.tree.leaves(b)
  assert len(leaves_a) == len(leaves_b)
  for x, y in zip(leaves_a, leaves_b):
    if tolerance:
      np.testing.assert_allclose(np.asarray(x), np.asarray(y), **tolerance)
    else:
      np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_mesh_shape_resolution_and_errors():
  assert sharding_lib.mesh_shape({"data": -1, "fsdp": 2, "model": 1}, 8) == (4, 2, 1)
  assert sharding_lib.mesh_shape({"data": 2, "fsdp": 2, "model": 2}, 8) == (2, 2, 2)
  with pytest.raises(ValueError, match="at most one -1"):
    sharding_lib.mesh_shape({"data": -1, "fsdp": -1, "model": 1}, 8)
  with pytest.raises(ValueError, match="does not divide"):
    sharding_lib.mesh_shape({"data": -1, "fsdp": 3, "model": 1}, 8)
  with pytest.raises(ValueError, match="holds 4 devices"):
    sharding_lib.mesh_shape({"data": 2, "fsdp": 2, "model": 1}, 8)


def test_batch_that_does_not_split_over_the_mesh_is_refused(data_dir, tmp_path):
  cfg = toy_task.config(data_dir, batch_size=4)
  mesh = sharding_lib.create_mesh({"data": 2, "fsdp": 4, "model": 1})
  with pytest.raises(ValueError, match="batch_size=4 does not split over the 8 batch shards"):
    loop.train(cfg, str(tmp_path), toy_task.make_task(cfg), mesh)


def test_fsdp_rules_shard_parameters_and_optimizer_state(data_dir):
  cfg = toy_task.config(data_dir)
  mesh = sharding_lib.create_mesh({"data": 2, "fsdp": 4, "model": 1})
  abstract, shardings, init_fn = loop.initial_state(toy_task.make_task(cfg), cfg, mesh)
  state = init_fn()
  kernel = state.params["Dense_0"]["kernel"]  # logical ("embed", "mlp") -> ("fsdp", "model")
  assert kernel.sharding.spec == jax.sharding.PartitionSpec("fsdp", "model")
  assert kernel.addressable_shards[0].data.shape == (16 * 16 * 3 // 4, 32)
  adam_mu = state.opt_state[0].mu["Dense_0"]["kernel"]
  assert adam_mu.sharding.spec == kernel.sharding.spec
  assert abstract.params["Dense_0"]["kernel"].sharding == kernel.sharding
  assert state.step.sharding.spec == jax.sharding.PartitionSpec()


def test_one_step_same_on_one_and_eight_devices(data_dir):
  cfg = toy_task.config(data_dir, total_steps=1, log_every_steps=1)
  states = []
  for mesh in (one_device_mesh(),
               sharding_lib.create_mesh({"data": 4, "fsdp": 2, "model": 1})):
    states.append(loop.train(cfg, os.path.join(data_dir, f"one_step_{mesh.size}"),
                             toy_task.make_task(cfg), mesh))
  assert int(states[0].step) == int(states[1].step) == 1
  assert_trees_equal(states[0], states[1], rtol=1e-5, atol=1e-6)
  # The update is not trivially zero.
  initial = loop.initial_state(toy_task.make_task(cfg), cfg, one_device_mesh())[2]()
  assert not np.allclose(states[0].params["Dense_0"]["kernel"], initial.params["Dense_0"]["kernel"])


def test_sigterm_resume_equals_uninterrupted_run(data_dir, tmp_path):
  cfg = toy_task.config(data_dir, total_steps=8, eval_every_steps=3)
  mesh = sharding_lib.create_mesh({"data": -1, "fsdp": 2, "model": 1})
  straight_task = toy_task.make_task(cfg)
  straight = loop.train(cfg, str(tmp_path / "straight"), straight_task, mesh)

  def terminate_at_step_3(state, step, writer):  # pylint: disable=unused-argument
    if step == 3:
      os.kill(os.getpid(), signal.SIGTERM)

  workdir = str(tmp_path / "interrupted")
  stopped = loop.train(cfg, workdir, toy_task.make_task(cfg, evaluate=terminate_at_step_3), mesh)
  assert int(stopped.step) == 4  # the signal is acted on after the next step, which is saved
  checkpointer = checkpoint_lib.Checkpointer(os.path.join(workdir, "checkpoints"),
                                             max_to_keep=3, save_interval_steps=4)
  assert checkpointer.latest_step() == 4
  checkpointer.close()
  resumed_task = toy_task.make_task(cfg)
  resumed = loop.train(cfg, workdir, resumed_task, mesh)
  assert int(resumed.step) == 8
  assert_trees_equal(straight, resumed)  # params, Adam state, EMA, step: bit for bit
  # The data iterators are at the same position too.
  np.testing.assert_array_equal(next(straight_task.train_iterator)["source_image"],
                                next(resumed_task.train_iterator)["source_image"])


def test_finished_run_resumes_to_the_same_state_without_training(data_dir, tmp_path):
  cfg = toy_task.config(data_dir, total_steps=4)
  mesh = one_device_mesh()
  first = loop.train(cfg, str(tmp_path), toy_task.make_task(cfg), mesh)
  again = loop.train(cfg, str(tmp_path), toy_task.make_task(cfg), mesh)
  assert_trees_equal(first, again)


def test_non_finite_loss_stops_with_a_clear_message_and_saves_nothing(data_dir, tmp_path):
  cfg = toy_task.config(data_dir, learning_rate=1e30, total_steps=20)
  with pytest.raises(loop.NonFiniteLossError, match="not finite.*no checkpoint was saved"):
    loop.train(cfg, str(tmp_path), toy_task.make_task(cfg), one_device_mesh())
  assert not glob.glob(str(tmp_path / "checkpoints" / "*"))


def test_loss_falls_and_metrics_reach_tensorboard(data_dir, tmp_path):
  cfg = toy_task.config(data_dir, total_steps=40, log_every_steps=10, learning_rate=3e-3)
  task = toy_task.make_task(cfg)
  mesh = one_device_mesh()
  first_loss = float(jax.jit(task.train_step)(
      loop.initial_state(task, cfg, mesh)[2](), next(toy_task.make_task(cfg).train_iterator),
      jax.random.key(0), None)[1]["loss"])
  state = loop.train(cfg, str(tmp_path), task, mesh)
  final_loss = float(task.train_step(state, next(task.train_iterator), jax.random.key(1), None)[1]["loss"])
  assert final_loss < 0.5 * first_loss
  events = glob.glob(str(tmp_path / "events.out.tfevents.*"))
  assert events, "process 0 writes TensorBoard event files"
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tags = {value.tag for event in tf.compat.v1.train.summary_iterator(events[0])
          for value in event.summary.value}
  assert {"loss", "steps_per_second"} <= tags


def test_checkpoint_of_another_model_is_refused_clearly(data_dir, tmp_path):
  cfg = toy_task.config(data_dir, total_steps=2)
  mesh = one_device_mesh()
  loop.train(cfg, str(tmp_path), toy_task.make_task(cfg), mesh)
  wider = toy_task.config(data_dir, total_steps=4, hidden_units=48)
  with pytest.raises(ValueError, match=r"does not fit this config.*params.Dense_0.bias has shape \(32,\) there, \(48,\) here"):
    loop.train(wider, str(tmp_path), toy_task.make_task(wider), mesh)


def test_run_shows_compile_time_and_progress_and_records_metrics(data_dir, tmp_path, caplog,
                                                                 capsys):
  """Process 0 says it compiles, how long that took, draws a progress bar with the task's
  progress metrics, keeps Orbax's INFO lines out of the log, and writes metrics.json; a rerun
  has nothing to do."""
  cfg = toy_task.config(data_dir, total_steps=6, log_every_steps=2, eval_every_steps=3)

  def evaluate(state, step, writer):  # pylint: disable=unused-argument
    writer.write_scalars(step, {"eval/score": float(step)})

  caplog.set_level(logging.INFO)
  loop.train(cfg, str(tmp_path), toy_task.make_task(cfg, evaluate=evaluate),
             one_device_mesh())
  messages = [record.getMessage() for record in caplog.records]
  assert any(message.startswith("compiling the train step") for message in messages)
  assert any(re.fullmatch(r"train step compiled in [\d.]+ s; training steps 1 to 6", message)
             for message in messages)
  orbax_info = [record for record in caplog.records
                if f"{os.sep}orbax{os.sep}" in record.pathname and record.levelno < logging.WARNING]
  assert not orbax_info and os.path.isdir(tmp_path / "checkpoints" / "6")
  bar = capsys.readouterr().err.replace("\r", "\n")
  assert re.search(r"train: 100%.*6/6 .*step/s, loss=[\d.e-]+\]", bar), bar[-1000:]

  metrics = run_metrics.read(str(tmp_path))
  assert metrics["total_steps"] == 6 and metrics["main_metric"] == "loss"
  assert metrics["latest"]["eval/score"] == [6, 6.0]
  assert [step for step, _ in metrics["history"]["loss"]] == [2, 4, 6]
  assert "steps_per_second" not in metrics["history"]

  caplog.clear()
  loop.train(cfg, str(tmp_path), toy_task.make_task(cfg), one_device_mesh())
  assert any(record.getMessage().startswith(f"nothing to do: {tmp_path} is already at step 6 "
                                            "of 6") for record in caplog.records)
  assert not any("compiling" in record.getMessage() for record in caplog.records)


def test_orbax_info_lines_show_at_verbosity_one(data_dir, tmp_path, caplog):
  cfg = toy_task.config(data_dir, total_steps=2)
  caplog.set_level(logging.DEBUG)
  previous = absl_logging.get_verbosity()
  absl_logging.set_verbosity(1)
  try:
    loop.train(cfg, str(tmp_path), toy_task.make_task(cfg), one_device_mesh())
  finally:
    absl_logging.set_verbosity(previous)
  assert any(f"{os.sep}orbax{os.sep}" in record.pathname and record.levelno == logging.INFO
             for record in caplog.records)
