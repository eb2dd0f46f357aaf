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
