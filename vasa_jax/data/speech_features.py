"""Per-video-frame speech features, the audio condition of the motion stage.

Two kinds, chosen by `config.audio.features` of `configs/motion.py`:

- "wav2vec2" (VASA-1): hidden states of a Wav2Vec2 model loaded from a local Hugging Face
  directory (`config.audio.wav2vec2_dir`), one layer (`config.audio.layer`), resampled to the
  video frame rate by `vasa_jax.models.audio.audio_features`.
- "log_mel": a log-mel spectrogram with one 25 ms (or longer, up to the frame hop) analysis
  window centred on each video frame. It needs no pretrained weights, so the CPU learning check
  and tests use it.

Both return float32 [T, dim] with T = `audio.num_video_frames(N, fps)`; frame i describes the
audio around (i + 0.5) / fps seconds, the centre of video frame i.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import ml_collections
import numpy as np

from vasa_jax.models import audio as audio_lib

FEATURE_KINDS = ("wav2vec2", "log_mel")
# Floor added to mel power before the log: -11.5 for digital silence.
_LOG_FLOOR = 1e-5
_ANALYSIS_SECONDS = 0.025


@dataclasses.dataclass(frozen=True)
class SpeechFeaturizer:
  """waveform float [N] at 16 kHz -> float32 [T, dim] features, one per video frame."""
  kind: str  # one of FEATURE_KINDS
  dim: int  # feature width
  fps: float  # video frame rate the features are aligned to
  compute: Callable[[np.ndarray], np.ndarray]  # the featuriser

  def __call__(self, waveform: np.ndarray) -> np.ndarray:
    waveform = np.asarray(waveform, np.float32)
    if waveform.ndim != 1:
      raise ValueError(f"speech features need a mono waveform [N], got shape {waveform.shape}")
    features = self.compute(waveform)
    expected = (audio_lib.num_video_frames(len(waveform), self.fps), self.dim)
    if features.shape != expected:
      raise AssertionError(f"{self.kind} features have shape {features.shape}, not {expected}")
    return features.astype(np.float32)


def mel_filterbank(num_mels: int, fft_size: int, sample_rate: int = audio_lib.SAMPLE_RATE,
                   min_hz: float = 20.0, max_hz: float | None = None) -> np.ndarray:
  """Triangular HTK-mel filters [fft_size // 2 + 1, num_mels], each peaking at 1."""
  max_hz = sample_rate / 2 if max_hz is None else max_hz
  to_mel = lambda hz: 2595.0 * np.log10(1.0 + np.asarray(hz) / 700.0)
  to_hz = lambda mel: 700.0 * (10.0 ** (np.asarray(mel) / 2595.0) - 1.0)
  edges = to_hz(np.linspace(to_mel(min_hz), to_mel(max_hz), num_mels + 2))  # [num_mels + 2]
  bins = np.linspace(0.0, sample_rate / 2, fft_size // 2 + 1)  # [F]
  lower, centre, upper = edges[:-2], edges[1:-1], edges[2:]
  rising = (bins[:, None] - lower) / (centre - lower)
  falling = (upper - bins[:, None]) / (upper - centre)
  return np.maximum(0.0, np.minimum(rising, falling)).astype(np.float32)


def log_mel(waveform: np.ndarray, fps: float, num_mels: int) -> np.ndarray:
  """Log-mel power [T, num_mels] with one Hann window centred on each video frame."""
  hop = audio_lib.SAMPLE_RATE / fps  # samples per video frame
  window_length = max(int(round(_ANALYSIS_SECONDS * audio_lib.SAMPLE_RATE)), int(round(hop)))
  fft_size = 1 << (window_length - 1).bit_length()
  num_frames = audio_lib.num_video_frames(len(waveform), fps)
  centres = np.round((np.arange(num_frames) + 0.5) * hop).astype(np.int64)  # [T]
  offsets = np.arange(window_length) - window_length // 2  # [L]
  padded = np.pad(waveform, (window_length, window_length))
  segments = padded[centres[:, None] + offsets[None, :] + window_length]  # [T, L]
  spectrum = np.fft.rfft(segments * np.hanning(window_length)[None, :], n=fft_size)  # [T, F]
  power = np.abs(spectrum) ** 2 / window_length
  return np.log(power @ mel_filterbank(num_mels, fft_size) + _LOG_FLOOR)


def from_config(audio_config: ml_collections.ConfigDict, fps: float) -> SpeechFeaturizer:
  """The featuriser `audio_config` (`config.audio` of configs/motion.py) describes."""
  kind = audio_config.features
  if kind == "log_mel":
    return SpeechFeaturizer(kind, audio_config.num_mels, fps,
                            lambda waveform: log_mel(waveform, fps, audio_config.num_mels))
  if kind == "wav2vec2":
    if not audio_config.wav2vec2_dir:
      raise ValueError("config.audio.features is 'wav2vec2' but config.audio.wav2vec2_dir names "
                       "no local Hugging Face Wav2Vec2 directory")
    bundle = audio_lib.load_wav2vec2(audio_config.wav2vec2_dir)
    return SpeechFeaturizer(
        kind, bundle.config.hidden_size, fps,
        lambda waveform: audio_lib.audio_features(
            bundle, waveform, fps=fps, layer=audio_config.layer,
            chunk_seconds=audio_config.chunk_seconds))
  raise ValueError(f"config.audio.features is {kind!r}; choose one of {FEATURE_KINDS}")
