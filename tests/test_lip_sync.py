"""vasa_jax.evaluators.lip_sync: the tracker's mouth opening on frames vs the speech."""

import numpy as np
import pytest

from vasa_jax.data import media
from vasa_jax.data.synthtalk import dataset as synthtalk
from vasa_jax.data.synthtalk import render as synthtalk_render
from vasa_jax.evaluators import lip_sync

MOUTH = synthtalk_render.FACTOR_NAMES.index("mouth_open")


@pytest.fixture(scope="module")
def clip():
  """A SynthTalk clip at 64 px (frames as generated video would be), its speech and mouth."""
  settings = synthtalk.Settings(seed=3, fps=25.0, resolution=64, min_seconds=2.4, max_seconds=2.4,
                                use_espeak=synthtalk.espeak_available(), jpeg_quality=90)
  record = synthtalk.make_clip(settings, speaker_index=1, clip_index=0)
  frames = np.stack([media.decode_jpeg(frame) for frame in record["frames"]])
  return (frames, record["audio"].astype(np.float32) / 32768.0,
          record["ground_truth"]["factors"], record["ground_truth"]["identity"])


def test_speech_envelope_is_the_rms_of_each_frame_window():
  rng = np.random.default_rng(0)
  audio = rng.normal(size=16_000).astype(np.float32)
  audio[8_000:] *= 0.1
  envelope = media.speech_envelope(audio, 25, 25.0)
  half = 320
  for t in (3, 10, 20):
    window = audio[max(0, 640 * t - half):640 * t + half]
    expected = np.sqrt(np.sum(window.astype(np.float64) ** 2) / (2 * half))
    np.testing.assert_allclose(envelope[t], expected, rtol=1e-5)
  assert envelope[20] < 0.2 * envelope[5]


def test_best_lag_correlation_finds_the_lag_and_refuses_too_few_frames():
  rng = np.random.default_rng(1)
  signal = np.convolve(rng.normal(size=120), np.ones(4) / 4, mode="same")
  shifted = np.roll(signal, 2)  # shifted[t + 2] = signal[t]
  r, lag = lip_sync.best_lag_correlation(signal, shifted)
  assert lag == 2 and r > 0.99
  assert lip_sync.best_lag_correlation(signal, shifted, max_lag=1)[0] < 0.9
  r, _ = lip_sync.best_lag_correlation(signal[:5], shifted[:5])
  assert np.isnan(r)
  with_gaps = signal.copy()
  with_gaps[::3] = np.nan  # frames without a face are left out, not zeros
  assert lip_sync.best_lag_correlation(with_gaps, signal)[0] > 0.99


def test_real_synthtalk_frames_follow_their_speech(clip):
  frames, audio, factors, _ = clip
  track = lip_sync.track_mouth(frames)
  scores = lip_sync.lip_sync_scores(track, audio, 25.0, true_mouth=factors[:, MOUTH])
  assert scores["face_found_rate"] >= 0.95
  assert scores["mouth_truth_correlation"] > 0.8
  assert scores["mouth_envelope_correlation"] > 0.6


def test_a_still_or_scrambled_mouth_does_not_follow_the_speech(clip):
  frames, audio, factors, identity = clip
  still = factors.copy()
  still[:, MOUTH] = 0.0
  scrambled = factors.copy()
  scrambled[:, MOUTH] = np.random.default_rng(0).permutation(factors[:, MOUTH])
  identity = synthtalk_render.Identity.from_array(identity)
  still_track = lip_sync.track_mouth(synthtalk_render.render_frames(identity, still, 64)[0])
  scrambled_track = lip_sync.track_mouth(
      synthtalk_render.render_frames(identity, scrambled, 64)[0])
  true_track = lip_sync.track_mouth(frames)
  still_r = lip_sync.lip_sync_scores(still_track, audio, 25.0)["mouth_envelope_correlation"]
  scrambled_r = lip_sync.lip_sync_scores(scrambled_track, audio,
                                         25.0)["mouth_envelope_correlation"]
  true_r = lip_sync.lip_sync_scores(true_track, audio, 25.0)["mouth_envelope_correlation"]
  assert np.nan_to_num(still_r) < true_r - 0.4
  assert scrambled_r < true_r - 0.4
  control = lip_sync.shuffled_control([true_track, scrambled_track], [audio, audio[::-1]], 25.0)
  assert len(control) == 2


def test_frames_without_a_face_count_against_the_found_rate(clip):
  frames = clip[0].copy()
  frames[::2] = 128  # every other frame grey
  track = lip_sync.track_mouth(frames)
  assert 0.4 <= track.found.mean() <= 0.55
  assert np.isnan(track.opening[~track.found]).all()
