"""vasa_jax.pipeline: the demo's SynthTalk step is made once and never silently replaced."""

import os

import pytest

from vasa_jax import pipeline
from vasa_jax.data import records

SETTINGS = pipeline.SynthTalkSettings(num_speakers=2, clips_per_speaker=1, resolution=64,
                                      min_seconds=1.0, max_seconds=1.0, test_fraction=0.5,
                                      num_workers=1)


def test_synthtalk_is_made_once_and_reused(tmp_path):
  output_dir = str(tmp_path / "synthtalk")
  assert pipeline.make_synthtalk(output_dir, SETTINGS)
  manifest_path = os.path.join(output_dir, records.MANIFEST_NAME)
  made_at = os.stat(manifest_path).st_mtime_ns
  manifest = records.read_manifest(output_dir)
  assert sum(len(split["clips"]) for split in manifest["splits"].values()) == 2
  # A rerun (the worker count does not change the data) finds the set and makes nothing.
  rerun_settings = pipeline.SynthTalkSettings(**{**SETTINGS.__dict__, "num_workers": 2})
  assert not pipeline.make_synthtalk(output_dir, rerun_settings)
  assert os.stat(manifest_path).st_mtime_ns == made_at
  # Other settings in the same place are refused, naming the setting.
  with pytest.raises(pipeline.PipelineError, match="num_speakers"):
    pipeline.make_synthtalk(output_dir, pipeline.SynthTalkSettings(
        **{**SETTINGS.__dict__, "num_speakers": 3}))
