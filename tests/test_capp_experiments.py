"""experiments/capp_synthtalk.py's reference without training and experiments/eval_synthtalk.py's
table (their pure parts; the runs themselves are in experiments/LOG.md)."""

import numpy as np
import pytest

from tests import experiment_scripts

capp_synthtalk = experiment_scripts.load("capp_synthtalk")
eval_synthtalk = experiment_scripts.load("eval_synthtalk")


def test_loudness_reference_peaks_where_the_pitch_follows_the_loudness():
  rng = np.random.default_rng(0)
  num_frames, lag = 140, 3
  loudness = rng.normal(size=num_frames)  # [T]
  audio = np.repeat(loudness[:, None], 4, axis=1) - np.log(4.0)  # log-sum-exp over bands: loudness
  smoothed = capp_synthtalk._gaussian_smooth(loudness, capp_synthtalk._NOD_SMOOTHING_FRAMES)
  pose = np.zeros((num_frames, 6))
  pose[lag:, 1] = smoothed[:-lag]  # the head nods `lag` frames after the sound
  reference = capp_synthtalk.loudness_reference([{"audio": audio, "pose": pose}], window=75)
  assert set(reference) == {str(shift) for shift in range(-8, 9)}
  assert max(reference, key=reference.get) == str(lag)
  assert reference[str(lag)] == pytest.approx(1.0, abs=1e-6)
  assert reference[str(lag)] > reference["0"] > reference["-8"]


def _results(overall, clips, scored, notes=(), skipped=()):
  return {"overall": overall, "notes": list(notes), "skipped": list(skipped),
          "counts": {"clips": clips, "scored": scored}}


def test_markdown_table_rows_columns_and_notes():
  rows = {
      "real clips": _results({"sync_confidence": 1.5, "capp": 0.25, "delta_pose": 0.9}, 2,
                             {"sync_confidence": 2, "capp": 2, "delta_pose": 2},
                             notes=["fvd left out: --i3d not given"]),
      "generated": _results({"sync_confidence": 1.0, "delta_pose": 0.7, "lmd": 4.5}, 2,
                            {"sync_confidence": 1, "delta_pose": 1, "lmd": 1},
                            notes=["fvd left out: --i3d not given"],
                            skipped=[{"clip": "b", "metric": "capp", "reason": "no face"}]),
  }
  lines = eval_synthtalk.markdown_table(rows).splitlines()
  assert lines[0] == "| | clips scored / chosen | Sc ↑ | CAPP ↑ | ΔP | LMD ↓ |"
  assert lines[2] == "| real clips | 2 / 2 | 1.500 | 0.250 | 0.900 | — |"
  assert lines[3] == "| generated | 1 / 2 | 1.000 | — | 0.700 | 4.500 |"
  # The notes once, then each skipped metric with its row.
  assert lines[5:] == ["- fvd left out: --i3d not given", "- generated: b (capp): no face"]
  settings = {"syncnet": "old.npz", "syncnet_width": 0.25, "capp_checkpoint": "capp",
              "i3d": None, "inception": None, "clips": ["a", "b"], "demo_dir": "demo"}
  text = eval_synthtalk.table_text({"rows": rows, "settings": settings})
  assert text.startswith("Scored with SyncNet `old.npz` (width 0.25), CAPP `capp`, ")
  assert text.endswith(eval_synthtalk.markdown_table(rows))


def test_file_names_of_clip_ids():
  assert eval_synthtalk.file_name("synth00004/00002") == "synth00004_00002"
