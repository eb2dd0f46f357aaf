"""experiments/long_audio_synthtalk.py: the first-vs-last comparison that detects drift."""

import numpy as np

from tests import experiment_scripts


def test_compare_ends_flags_drift_and_collapse_but_not_a_steady_clip():
  script = experiment_scripts.load("long_audio_synthtalk")
  rng = np.random.default_rng(0)
  frames, stretch = 1500, 250
  envelope = np.abs(np.convolve(rng.normal(size=frames), np.ones(5) / 5, mode="same"))
  mouth = envelope + 0.05 * rng.normal(size=frames)
  motion = np.concatenate([0.1 * rng.normal(size=(frames, 7)), rng.normal(size=(frames, 4))], 1)
  steady = script.compare_ends(motion, mouth, envelope, stretch, tolerance=0.2)
  assert steady["all_within_tolerance"], steady
  assert steady["first"]["mouth_envelope_correlation"] > 0.9
  # The head's motion grows over the clip: the pose variance of the last stretch is ~4x.
  drifting = motion.copy()
  drifting[:, :7] *= np.linspace(1.0, 2.0, frames)[:, None]
  report = script.compare_ends(drifting, mouth, envelope, stretch, tolerance=0.2)
  assert not report["within_tolerance"]["pose_variance"]
  assert report["last_over_first"]["pose_variance"] > 3.0
  assert report["within_tolerance"]["mouth_envelope_correlation"]
  # The mouth stops following the speech at the end.
  collapsed = mouth.copy()
  collapsed[-stretch:] = 0.01 * rng.normal(size=stretch)
  report = script.compare_ends(motion, collapsed, envelope, stretch, tolerance=0.2)
  assert not report["within_tolerance"]["mouth_std"]
  assert not report["within_tolerance"]["mouth_envelope_correlation"]
  assert not report["all_within_tolerance"]


def test_local_pose_variance_leaves_out_the_slow_wander_and_runs_average():
  script = experiment_scripts.load("long_audio_synthtalk")
  rng = np.random.default_rng(1)
  frames, stretch = 1500, 250
  envelope = np.abs(rng.normal(size=frames))
  motion = np.concatenate([0.1 * rng.normal(size=(frames, 7)), rng.normal(size=(frames, 4))], 1)
  wandering = motion.copy()
  wandering[:, :7] += np.sin(np.linspace(0, 3 * np.pi, frames))[:, None]  # a slow sway
  steady = script.stretch_profile(motion, envelope, envelope, stretch)
  swaying = script.stretch_profile(wandering, envelope, envelope, stretch)
  assert len(steady) == 6
  # The sway adds ~7 x 0.2 of variance within each 10-s stretch, but little within 2-s pieces.
  assert swaying[0]["pose_variance"] > steady[0]["pose_variance"] + 0.5
  assert abs(swaying[0]["local_pose_variance"] - steady[0]["local_pose_variance"]) < 0.1
  mean = script.mean_profile([steady, swaying])
  assert np.isclose(mean[2]["pose_variance"],
                    (steady[2]["pose_variance"] + swaying[2]["pose_variance"]) / 2)
