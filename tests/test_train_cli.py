"""`python -m vasa_jax.train`: config loading, overrides and clear failures."""

import glob
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_train(tmp_path, config_body: str, *args):
  config_path = tmp_path / "experiment.py"
  config_path.write_text(config_body)
  return subprocess.run(
      [sys.executable, "-m", "vasa_jax.train", f"--config={config_path}",
       f"--workdir={tmp_path / 'work'}", *args],
      cwd=REPO, capture_output=True, text=True, timeout=120, check=False)


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


def test_unknown_override_is_refused(tmp_path):
  result = run_train(tmp_path, CONFIG.format(stage="no_such_stage"), "--config.no_such_field=3")
  assert result.returncode != 0
  assert "no_such_field" in result.stderr


def test_missing_config_file_is_named(tmp_path):
  result = subprocess.run(
      [sys.executable, "-m", "vasa_jax.train", f"--config={tmp_path}/absent.py",
       f"--workdir={tmp_path}"], cwd=REPO, capture_output=True, text=True, timeout=120,
      check=False)
  assert result.returncode != 0
  assert "absent.py" in result.stderr


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
