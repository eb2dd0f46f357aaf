"""`python -m vasa_jax.train`: config loading, overrides, one-line failures, finished runs."""

import glob
import os
import subprocess
import sys

import pytest

from configs import motion as motion_config
from tests import fake_clips
from tests import fake_motion
from tests import fake_runs

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_train(tmp_path, config_body: str, *args):
  config_path = tmp_path / "experiment.py"
  config_path.write_text(config_body)
  return run_module(f"--config={config_path}", f"--workdir={tmp_path / 'work'}", *args)


def run_module(*args):
  return subprocess.run([sys.executable, "-m", "vasa_jax.train", *args], cwd=REPO,
                        capture_output=True, text=True, timeout=120, check=False)


def assert_one_error_line(result, *fragments):
  """Exit status 1, no traceback, and the last line of stderr is the one `error: ...` line."""
  assert result.returncode == 1, result.stderr[-2000:]
  assert "Traceback" not in result.stderr, result.stderr[-2000:]
  lines = result.stderr.strip().splitlines()
  assert lines[-1].startswith("error: ") and sum(
      line.startswith("error:") for line in lines) == 1, result.stderr[-2000:]
  for fragment in fragments:
    assert fragment in lines[-1], lines[-1]


CONFIG = """
from vasa_jax.training import base_config

def get_config(arg=None):
  config = base_config.base_config()
  config.stage = {stage!r}
  return config
"""


def test_unknown_stage_fails_naming_it(tmp_path):
  result = run_train(tmp_path, CONFIG.format(stage="no_such_stage"))
  assert result.returncode != 0
  assert "no trainer for stage 'no_such_stage'" in result.stderr


def test_config_without_stage_fails_clearly(tmp_path):
  result = run_train(tmp_path, CONFIG.format(stage=""))
  assert result.returncode != 0
  assert "the config sets no `stage`" in result.stderr


def test_unknown_override_is_one_line_and_the_traceback_needs_verbosity(tmp_path):
  result = run_train(tmp_path, CONFIG.format(stage="no_such_stage"), "--config.total_step=3")
  assert_one_error_line(result, "unknown config field --config.total_step",
                        "did you mean --config.total_steps?")
  verbose = run_train(tmp_path, CONFIG.format(stage="no_such_stage"), "--config.total_step=3",
                      "--verbosity=1")
  assert verbose.returncode != 0 and "Traceback" in verbose.stderr


def test_missing_config_file_is_named(tmp_path):
  assert_one_error_line(run_module(f"--config={tmp_path}/absent.py", f"--workdir={tmp_path}"),
                        f"config file '{tmp_path}/absent.py' does not exist")


@pytest.fixture(scope="module")
def data_dirs(tmp_path_factory):
  """{"clips": clip shards, "motion": motion shards, "empty": a directory without a manifest}."""
  root = tmp_path_factory.mktemp("data")
  fake_clips.make_data_dir(str(root / "clips"))
  fake_motion.make_motion_data_dir(str(root / "motion"))
  (root / "empty").mkdir()
  return {name: str(root / name) for name in ("clips", "motion", "empty")}


@pytest.mark.parametrize("config,data,fragments", [
    ("configs/latent.py:tiny", None, ["config.data_dir is not set"]),
    ("configs/latent.py:tiny", "absent", ["data directory", "absent' does not exist"]),
    ("configs/motion.py:tiny", "empty", ["empty' has no manifest.json"]),
    ("configs/motion.py:tiny", "clips", ["holds clip records", "but stage 'motion' trains on "
                                         "motion records", "data_prep.extract_motion"]),
    ("configs/latent.py:tiny", "motion", ["holds motion records", "but stage 'latent' trains "
                                          "on clip records"]),
])
def test_data_mistakes_are_one_line(data_dirs, tmp_path, config, data, fragments):
  args = [f"--config={config}", f"--workdir={tmp_path / 'work'}"]
  if data:
    args.append(f"--config.data_dir={data_dirs.get(data, str(tmp_path / data))}")
  assert_one_error_line(run_module(*args), *fragments)


def test_rerun_of_a_finished_run_has_nothing_to_do(data_dirs, tmp_path):
  workdir = str(tmp_path / "finished")
  config = motion_config.get_config("tiny")
  config.total_steps = 3
  fake_runs.save_run(workdir, config, {"step": 3}, step=3)
  result = run_module("--config=configs/motion.py:tiny", f"--workdir={workdir}",
                      f"--config.data_dir={data_dirs['motion']}", "--config.total_steps=3")
  assert result.returncode == 0, result.stderr[-2000:]
  assert f"nothing to do: {workdir} is already at step 3 of 3" in result.stderr
  assert "compiling" not in result.stderr


@pytest.mark.slow
def test_latent_tiny_trains_from_the_command_line(tmp_path):
  data_dir = tmp_path / "synthtalk"
  subprocess.run([sys.executable, "-m", "data_prep.synthtalk", f"--output_dir={data_dir}",
                  "--num_speakers=6", "--clips_per_speaker=1", "--resolution=64",
                  "--min_seconds=1", "--max_seconds=1.5", "--test_fraction=0.34",
                  "--num_workers=1"], cwd=REPO, check=True, capture_output=True, timeout=300)
  workdir = tmp_path / "work"
  result = subprocess.run(
      [sys.executable, "-m", "vasa_jax.train", "--config=configs/latent.py:tiny",
       f"--workdir={workdir}", f"--config.data_dir={data_dir}", "--config.total_steps=2",
       "--config.batch_size=8", "--config.log_every_steps=1", "--config.eval_every_steps=2",
       "--config.checkpoint_every_steps=2", "--config.data.eval_batch_size=2"],
      cwd=REPO, capture_output=True, text=True, timeout=600, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "loss term 'vgg' (weight 20) is OFF" in result.stderr
  assert (workdir / "checkpoints" / "2").is_dir()
  events = glob.glob(str(workdir / "events.out.tfevents.*"))
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tags = {value.tag for event in tf.compat.v1.train.summary_iterator(events[0])
          for value in event.summary.value}
  assert {"loss/l1", "loss/cycle", "loss/discriminator", "eval/psnr_reenacted"} <= tags
  assert any(tag.startswith("eval/source_self_driver") for tag in tags)


def test_distributed_flags_without_multihost_are_refused(tmp_path):
  result = run_module("--config=configs/motion.py:tiny", f"--workdir={tmp_path / 'work'}",
                      "--num_processes=2", "--process_id=1")
  assert_one_error_line(result, "--num_processes --process_id only apply with --multihost")
