"""`python -m vasa_jax.train`: config loading, overrides and clear failures."""

import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_train(tmp_path, config_body: str, *args):
  config_path = tmp_path / "experiment.py"
  config_path.write_text(config_body)
  return subprocess.run(
      [sys.executable, "-m", "vasa_jax.train", f"--config={config_path}",
       f"--workdir={tmp_path / 'work'}", *args],
      cwd=REPO, capture_output=True, text=True, timeout=120, check=False)


CONFIG = """
from configs import common

def get_config(arg=None):
  config = common.base_config()
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
