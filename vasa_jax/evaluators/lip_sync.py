"""Lip sync measured on the pixels: the tracker's mouth opening on rendered frames vs the speech.

The mouth opening is read from generated frames exactly as data preparation reads it from real
video: dlib's detector and 68 landmarks (`vasa_jax.data.face_tracker`), then the inner-lip gap
over the mouth width (`head_geometry.mouth_aspect_ratio`, the first of the stored expression
measures). Frames smaller than `MEASURE_SIZE` are upscaled (bicubic) first, so that a 64 or 128
px render shows the detector a face of the size it finds (~40 px and up).

Scores (`lip_sync_scores`):
  face_found_rate: share of frames where the tracker finds a face;
  mouth_envelope_correlation: Pearson correlation between that mouth opening and the speech's
    RMS envelope at the frame rate (`media.speech_envelope`), over the frames with a face, at
    the best lag within +-MAX_LAG_FRAMES (the mouth may lead or trail the sound by a frame or
    two; SynthTalk's mouth leads it by one);
  mouth_truth_correlation: the same against a known mouth opening per frame (SynthTalk's ground
    truth), when one is given.
A shuffled-audio control (`shuffled_control`) correlates each clip's mouth with another clip's
envelope, with the same lag search: what the measure gives by chance.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

import numpy as np
from PIL import Image

from vasa_jax.data import face_tracker
from vasa_jax.data import head_geometry
from vasa_jax.data import media

# Frames are upscaled to at least this side before tracking (prepared crops are 256-512 px).
MEASURE_SIZE = 256
# Lags (frames) searched for the best correlation, either way.
MAX_LAG_FRAMES = 2
# Fewest frames with a face for a correlation to be reported (else NaN).
MIN_FRAMES = 8


@dataclasses.dataclass(frozen=True)
class MouthTrack:
  """found: bool [T], a face was tracked; opening: float [T], the mouth opening (NaN where not)."""
  found: np.ndarray
  opening: np.ndarray


def upscale_for_tracking(frames: np.ndarray, measure_size: int = MEASURE_SIZE
                         ) -> tuple[np.ndarray, float]:
  """(frames upscaled (bicubic) so that their short side is at least `measure_size`, the
  scale); frames already that large come back as they are with scale 1."""
  frames = np.asarray(frames)
  if frames.ndim != 4 or frames.dtype != np.uint8 or not len(frames):
    raise ValueError(f"frames must be uint8 [T > 0, H, W, 3], got {frames.dtype} {frames.shape}")
  height, width = frames.shape[1:3]
  scale = max(1.0, measure_size / min(height, width))
  if scale > 1.0:
    size = (round(width * scale), round(height * scale))
    frames = np.stack([np.asarray(Image.fromarray(frame).resize(size, Image.Resampling.BICUBIC))
                       for frame in frames])
  return frames, scale


def mouth_track(found: np.ndarray, landmarks: np.ndarray) -> MouthTrack:
  """The mouth opening of tracked 68-point landmarks [T, 68, 2] (NaN where `found` is False)."""
  opening = np.full(len(found), np.nan)
  for t in np.flatnonzero(found):
    opening[t] = head_geometry.mouth_aspect_ratio(landmarks[t])
  return MouthTrack(found=np.asarray(found, bool), opening=opening)


def track_mouth(frames: np.ndarray, tracker: Optional[face_tracker.FaceTracker] = None,
                measure_size: int = MEASURE_SIZE) -> MouthTrack:
  """Mouth opening per frame of uint8 [T, H, W, 3] video, as data preparation measures it."""
  frames, _ = upscale_for_tracking(frames, measure_size)
  tracker = tracker or face_tracker.FaceTracker()
  return mouth_track(*tracker.track_landmarks(frames))


def best_lag_correlation(x: np.ndarray, y: np.ndarray, max_lag: int = MAX_LAG_FRAMES
                         ) -> tuple[float, int]:
  """(Pearson r, lag) of x[t] against y[t + lag] maximised over |lag| <= max_lag, using the
  frames where both are finite; (NaN, 0) with fewer than MIN_FRAMES such frames or no spread."""
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  count = min(len(x), len(y))
  x, y = x[:count], y[:count]
  best = (np.nan, 0)
  for lag in range(-max_lag, max_lag + 1):
    a = x[max(0, -lag):count - max(0, lag)]
    b = y[max(0, lag):count - max(0, -lag)]
    valid = np.isfinite(a) & np.isfinite(b)
    if valid.sum() < MIN_FRAMES or a[valid].std() == 0 or b[valid].std() == 0:
      continue
    r = float(np.corrcoef(a[valid], b[valid])[0, 1])
    if np.isnan(best[0]) or r > best[0]:
      best = (r, lag)
  return best


def lip_sync_scores(track: MouthTrack, waveform: np.ndarray, fps: float,
                    true_mouth: Optional[np.ndarray] = None,
                    sample_rate: int = 16_000) -> dict[str, float]:
  """Scores of one clip: its mouth track vs its speech (float [N] at `sample_rate`)."""
  envelope = media.speech_envelope(waveform, len(track.opening), fps, sample_rate)
  r, lag = best_lag_correlation(track.opening, envelope)
  scores = {"face_found_rate": float(np.mean(track.found)),
            "mouth_envelope_correlation": r, "mouth_envelope_lag": lag}
  if true_mouth is not None:
    scores["mouth_truth_correlation"] = best_lag_correlation(track.opening, true_mouth)[0]
  return scores


def shuffled_control(tracks: Sequence[MouthTrack], waveforms: Sequence[np.ndarray], fps: float,
                     sample_rate: int = 16_000) -> list[float]:
  """Clip i's mouth against clip i+1's envelope (cyclically), with the same lag search."""
  count = len(tracks)
  if count < 2:
    return []
  return [best_lag_correlation(
      tracks[i].opening,
      media.speech_envelope(waveforms[(i + 1) % count], len(tracks[i].opening), fps,
                            sample_rate))[0] for i in range(count)]


def summarise(per_clip: Sequence[dict[str, float]], control: Sequence[float]) -> dict[str, float]:
  """Means over clips (NaN correlations left out, and counted)."""
  summary = {}
  for key in ("face_found_rate", "mouth_envelope_correlation", "mouth_truth_correlation"):
    values = np.array([clip[key] for clip in per_clip if key in clip], np.float64)
    if len(values):
      summary[key] = float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")
      summary[key + "_clips"] = int(np.isfinite(values).sum())
  values = np.asarray(control, np.float64)
  if len(values) and np.isfinite(values).any():
    summary["shuffled_audio_correlation"] = float(np.nanmean(values))
  return summary
