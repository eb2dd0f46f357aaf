"""Training on two hosts: `python -m vasa_jax.train --multihost` as 2 processes on 127.0.0.1 (4 CPU
devices each, collectives over gloo) at tiny size. The suite runs stage 2; the helpers take the
stage, and stage 1 through them (`check_two_process_training("latent", ...)` on a SynthTalk
directory) takes about five minutes on 2 cores, too long for the suite.

One launch is stopped by a SIGTERM to process 1 alone; a second launch resumes it to the end. The
two processes must stop at the same step after one checkpoint saved together, the resumed run's
final state must equal a 1-process run over the same 8-device mesh and global batches (to
float32 rounding), only process 0 may write metrics and images, and the two processes must read
disjoint training records (tests/multihost_worker.py logs each example's clip id).
"""

import glob
import os
import re
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from configs import latent as latent_config
from configs import motion as motion_config
from tests import fake_motion
from vasa_jax.data import input_pipeline
from vasa_jax.trainers import latent
from vasa_jax.trainers import motion
from vasa_jax.training import checkpoint as checkpoint_lib
from vasa_jax.training import loop
from vasa_jax.training import sharding as sharding_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOTAL_STEPS = 6
MESH = {"data": 2, "fsdp": 4, "model": 1}
LAUNCH_TIMEOUT_S = 900


@pytest.fixture(scope="module")
def compilation_cache(tmp_path_factory):
  """One persistent compilation cache for every launched process (the resumed launch compiles
  what the stopped one did)."""
  return str(tmp_path_factory.mktemp("jax_cache"))


def overrides_of(stage: str, data_dir: str) -> dict:
  """The config fields both the launched processes and the 1-process reference run use."""
  overrides = {"data_dir": data_dir, "batch_size": 8, "total_steps": TOTAL_STEPS,
               "log_every_steps": 1, "checkpoint_every_steps": 100,
               "eval_every_steps": TOTAL_STEPS, "mesh.data": MESH["data"],
               "mesh.fsdp": MESH["fsdp"]}
  if stage == "latent":
    overrides["data.eval_batch_size"] = 2
  else:
    overrides.update({"optimizer.warmup_steps": 0, "eval.num_clips": 1,
                      "eval.clip_seconds": 1.0, "eval.write_videos": False})
  return overrides


def make_config(stage: str, overrides: dict):
  config = (latent_config.get_config("tiny") if stage == "latent"
            else motion_config.get_config("tiny"))
  for name, value in overrides.items():
    *parents, field = name.split(".")
    node = config
    for parent in parents:
      node = node[parent]
    node[field] = value
  return config


def free_port() -> int:
  with socket.socket() as sock:
    sock.bind(("127.0.0.1", 0))
    return sock.getsockname()[1]


def launch(stage: str, overrides: dict, workdir: str, logs_dir: str, name: str, cache: str,
           sigterm_process_1: bool) -> list[str]:
  """Runs the 2 processes of one launch to their end; returns their logs. With
  `sigterm_process_1`, process 1 gets SIGTERM while it compiles the train step (JAX's preemption
  service notices a signal within about a second, a few tiny steps: sent later, it could miss a
  6-step run)."""
  port = free_port()
  xla_flags = re.sub(r"--xla_force_host_platform_device_count=\d+", "",
                     os.environ.get("XLA_FLAGS", ""))
  env = {**os.environ, "XLA_FLAGS": f"{xla_flags} --xla_force_host_platform_device_count=4",
         "JAX_COMPILATION_CACHE_DIR": cache, "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "1"}
  config_file = os.path.join(REPO, "configs", f"{stage}.py")
  processes, log_paths = [], []
  for process_id in range(2):
    log_paths.append(os.path.join(logs_dir, f"{name}_process{process_id}.log"))
    with open(log_paths[-1], "w", encoding="utf-8") as log:
      processes.append(subprocess.Popen(
          [sys.executable, "-m", "tests.multihost_worker",
           os.path.join(logs_dir, f"reads_process{process_id}.txt"),
           f"--config={config_file}:tiny", f"--workdir={workdir}",
           *(f"--config.{field}={value}" for field, value in overrides.items()),
           "--multihost", f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2",
           f"--process_id={process_id}"],
          cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT))
  deadline = time.monotonic() + LAUNCH_TIMEOUT_S
  try:
    if sigterm_process_1:
      while "compiling the train step" not in read(log_paths[1]):
        assert processes[1].poll() is None, read(log_paths[1])[-3000:]
        assert time.monotonic() < deadline, "process 1 never reached its first step"
        time.sleep(0.05)
      processes[1].send_signal(signal.SIGTERM)
    for process in processes:
      process.wait(timeout=max(1.0, deadline - time.monotonic()))
  finally:
    for process in processes:
      if process.poll() is None:
        process.kill()
  logs = [read(path) for path in log_paths]
  for process, log in zip(processes, logs):
    assert process.returncode == 0, log[-3000:]
  return logs


def read(path: str) -> str:
  with open(path, encoding="utf-8") as f:
    return f.read()


def checkpoint_steps(workdir: str) -> list[int]:
  return sorted(ocp.utils.checkpoint_steps(os.path.join(workdir, "checkpoints")))


def by_name(tree) -> dict[str, np.ndarray]:
  """{"generator.decoder...kernel": array} of a train state or a restored checkpoint."""
  def name(path) -> str:
    return ".".join(str(getattr(key, "key", getattr(key, "name", getattr(key, "idx", key))))
                    for key in path)
  return {name(path): np.asarray(leaf)
          for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def reference_state(stage: str, config):
  """The 1-process run: the loop's jitted step on the same 8-device mesh, each global batch
  made of process 0's then process 1's share (their iterators, built here)."""
  config.eval_every_steps = 0
  trainer = latent if stage == "latent" else motion
  tasks = [trainer.make_task(config, process_index=index, process_count=2)
           for index in range(2)]
  mesh = sharding_lib.create_mesh(config.mesh)
  _, shardings, init_fn = loop.initial_state(tasks[0], config, mesh)
  data_sharding = input_pipeline.batch_sharding(mesh, config.sharding_rules)
  train_step = loop.jit_train_step(tasks[0].train_step, shardings, data_sharding,
                                   config.sharding_rules)
  frozen = jax.device_put(tasks[0].frozen, sharding_lib.replicated(mesh))
  step_rng = jax.random.fold_in(loop.root_rng(config), 1)
  state = init_fn()
  for step in range(config.total_steps):
    shares = [next(task.train_iterator) for task in tasks]
    batch = jax.tree.map(lambda *parts: np.concatenate(parts), *shares)
    state, _ = train_step(state, input_pipeline.make_global_batch(batch, data_sharding),
                          jax.random.fold_in(step_rng, step), frozen)
  return jax.device_get(state)


def tensorboard_tags(workdir: str) -> tuple[int, set[str]]:
  """(number of event files, the tags written in them)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  events = glob.glob(os.path.join(workdir, "events.out.tfevents.*"))
  tags = {value.tag for path in events for event in tf.compat.v1.train.summary_iterator(path)
          for value in event.summary.value}
  return len(events), tags


def check_two_process_training(stage: str, data_dir: str, tmp_path, cache: str,
                               image_tag: str | None) -> None:
  overrides = overrides_of(stage, data_dir)
  workdir, logs_dir = str(tmp_path / "run"), str(tmp_path)

  stopped_logs = launch(stage, overrides, workdir, logs_dir, "stopped", cache,
                        sigterm_process_1=True)
  stops = [re.findall(r"preempted: every process saves a checkpoint at step (\d+)", log)
           for log in stopped_logs]
  assert all(len(found) == 1 for found in stops), stopped_logs[1][-3000:]
  stop_step = int(stops[0][0])
  assert int(stops[1][0]) == stop_step  # both processes stopped at the same step
  assert 1 <= stop_step < TOTAL_STEPS
  assert checkpoint_steps(workdir) == [stop_step]  # one coordinated save

  resumed_logs = launch(stage, overrides, workdir, logs_dir, "resumed", cache,
                        sigterm_process_1=False)
  for log in resumed_logs:
    assert f"step {stop_step}" in log and "resuming from" in log, log[-3000:]
  assert checkpoint_steps(workdir)[-1] == TOTAL_STEPS

  _, restored, step = checkpoint_lib.restore_for_inference(workdir, stage)
  assert step == TOTAL_STEPS
  expected = by_name(reference_state(stage, make_config(stage, overrides)))
  actual = by_name(restored)
  assert actual.keys() == expected.keys()
  # Equal up to float32 rounding: gloo's cross-process all-reduce sums the gradient shares in
  # another order than the one-process program (differences ~1e-9), which Adam's normalisation
  # enlarges where the exact gradient is zero (attention key biases: up to ~5e-5 after 6 steps
  # at learning rate 1e-3); another batch split or a step taken twice or missed would differ by
  # the size of an update.
  for name, value in expected.items():
    np.testing.assert_allclose(actual[name], value, rtol=1e-4, atol=2e-4, err_msg=name)

  # Process 0 alone writes: one TensorBoard event file per launch, with the held-out metrics and
  # images of the evaluation at the last step, and metrics.json.
  num_event_files, tags = tensorboard_tags(workdir)
  assert num_event_files == 2
  assert ("eval/x0_loss" if stage == "motion" else "eval/psnr_reenacted") in tags
  if image_tag:
    assert image_tag in tags
  assert os.path.exists(os.path.join(workdir, "metrics.json"))

  # Disjoint training records: each process drew only from its own half of the training split.
  train_clips = set(input_pipeline.ClipIndex.load(data_dir, "train").clip_ids)
  reads = [set(read(os.path.join(logs_dir, f"reads_process{index}.txt")).split()) & train_clips
           for index in range(2)]
  assert reads[0] and reads[1] and not reads[0] & reads[1]


@pytest.mark.slow
def test_stage2_on_two_processes(compilation_cache, tmp_path):
  data_dir = str(tmp_path / "motion_data")
  fake_motion.make_motion_data_dir(data_dir)
  # No stage-1 run to render with: the sample evaluation writes Delta P (no images).
  check_two_process_training("motion", data_dir, tmp_path, compilation_cache, image_tag=None)
