"""experiments/streaming_synthtalk.py: the mouth scores it compares between streamed and offline."""

import numpy as np

from tests import experiment_scripts
from vasa_jax.evaluators import synthtalk_check


def _clip(frames=100, fps=25.0, seed=0):
  """A motion record's fields the scores read: a mouth that opens with the speech's loudness."""
  rng = np.random.default_rng(seed)
  loudness = np.repeat(rng.uniform(0.0, 1.0, frames // 5), 5)  # [T], one value per 0.2 s
  samples_per_frame = int(16_000 / fps)
  audio = (20_000 * np.repeat(loudness, samples_per_frame)
           * np.sin(np.arange(frames * samples_per_frame) * 0.3)).astype(np.int16)
  factors = np.zeros((frames, len(synthtalk_check.render_lib.FACTOR_NAMES)), np.float32)
  factors[:, synthtalk_check.MOUTH_INDEX] = loudness
  return {"ground_truth": {"factors": factors}, "gaze": rng.normal(size=(frames, 2)),
          "audio": audio, "num_frames": frames, "fps": fps, "audio_sample_rate": 16_000}


def test_mouth_scores_follow_the_probe_mouth():
  script = experiment_scripts.load("streaming_synthtalk")
  clip = _clip()
  targets = synthtalk_check.probe_targets(clip)  # [T, 3]: mouth, gaze theta, gaze phi
  probe = synthtalk_check.RidgeProbe(targets, targets, alpha=1e-6)  # motion = the targets
  assert abs(probe(targets)[:, 0] - targets[:, 0]).max() < 1e-3
  matching = script.mouth_scores(probe, targets, clip)
  assert matching["mouth_vs_truth"] > 0.99 and matching["mouth_vs_envelope"] > 0.8
  closing = targets.copy()
  closing[:, 0] = -closing[:, 0]  # the mouth closes when the speech is loud
  assert script.mouth_scores(probe, closing, clip)["mouth_vs_truth"] < -0.99
  # A motion longer than the clip is cut to the clip's frames.
  longer = np.concatenate([targets, targets[:7]])
  assert script.mouth_scores(probe, longer, clip) == matching
