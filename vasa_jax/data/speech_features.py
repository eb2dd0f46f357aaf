"""Per-video-frame speech features, the audio condition of the motion stage.

Two kinds, chosen by `config.audio.features` of `configs/motion.py`:

- "wav2vec2" (VASA-1): hidden states of a Wav2Vec2 model loaded from a local Hugging Face
  directory (`config.audio.wav2vec2_dir`), one layer (`config.audio.layer`), resampled to the
  video frame rate by `vasa_jax.models.audio.audio_features`. They are made in blocks of
  `config.audio.chunk_seconds` of video frames; each block's forward sees its own audio, 2 s
  before it and 0.1 s after it, and THAT SEGMENT is normalised to zero mean and unit variance
  (Wav2Vec2FeatureExtractor's normalisation, per block instead of per recording). Data
  preparation, offline sampling and streaming all compute these blocks, so a stream's features
  equal the offline ones exactly and cost the same per frame.
- "log_mel": a log-mel spectrogram with one 25 ms (or longer, up to the frame hop) analysis
  window centred on each video frame. It needs no pretrained weights, so the CPU learning check
  and tests use it.

Both return float32 [T, dim] with T = `audio.num_video_frames(N, fps)`; frame i describes the
audio around (i + 0.5) / fps seconds, the centre of video frame i.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, Optional

import ml_collections
import numpy as np

from vasa_jax.models import audio as audio_lib

FEATURE_KINDS = ("wav2vec2", "log_mel")
# Floor added to mel power before the log: -11.5 for digital silence.
_LOG_FLOOR = 1e-5
_ANALYSIS_SECONDS = 0.025
# Wav2Vec2 blocks: seconds of audio before a block, and past its last frame, that its forward
# sees (attention context; the look-ahead covers half a receptive field and some future context).
WAV2VEC2_CONTEXT_SECONDS = 2.0
WAV2VEC2_LOOKAHEAD_SECONDS = 0.1


@dataclasses.dataclass(frozen=True)
class SpeechFeaturizer:
  """waveform float [N] at 16 kHz -> float32 [T, dim] features, one per video frame.

  Features are made in BLOCKS of video frames, the same way offline and live
  (`vasa_jax.inference.streaming.StreamingFeatures` computes the same blocks as audio arrives):
  the call for frames [first, stop) reads the samples `segment(first, stop, N)`, from
  `context_frames` frames before `first` to `lookahead_samples` past frame stop - 1 (clipped to
  the recording), and keeps the features of its frames. Offline, blocks of `block_frames` frames
  tile the clip from frame 0 (the last one shorter). `block_frames` None: the features are LOCAL
  (log-mel: each frame from its own samples), any split gives the same features, and offline
  runs the whole clip in one call.
  """
  kind: str  # one of FEATURE_KINDS
  dim: int  # feature width
  fps: float  # video frame rate the features are aligned to
  compute: Callable[[np.ndarray], np.ndarray]  # one segment -> its [num_video_frames, dim]
  block_frames: Optional[int] = None  # frames per call; None: local features
  context_frames: int = 0  # frames of audio before a block that its call sees
  lookahead_samples: int = 0  # samples past a block's last frame that its call sees

  @property
  def hop(self) -> float:
    """Samples per video frame."""
    return audio_lib.SAMPLE_RATE / self.fps

  def segment(self, first: int, stop: int, num_samples: int) -> tuple[int, int]:
    """Samples [start, end) of a recording of `num_samples` that frames [first, stop) need."""
    start = math.floor(max(0, first - self.context_frames) * self.hop)
    return start, min(num_samples, math.ceil(stop * self.hop) + self.lookahead_samples)

  def block(self, segment: np.ndarray, first: int, stop: int) -> np.ndarray:
    """Features [stop - first, dim] of frames [first, stop) from `segment`, the samples that
    `segment(first, stop, N)` names."""
    offset = max(0, first - self.context_frames)  # the frame `segment` starts at
    features = self.compute(np.asarray(segment, np.float32))[first - offset:stop - offset]
    if features.shape != (stop - first, self.dim):
      raise AssertionError(f"{self.kind} features of frames [{first}, {stop}) have shape "
                           f"{features.shape}, not {(stop - first, self.dim)}")
    return features.astype(np.float32)

  def __call__(self, waveform: np.ndarray) -> np.ndarray:
    waveform = np.asarray(waveform, np.float32)
    if waveform.ndim != 1:
      raise ValueError(f"speech features need a mono waveform [N], got shape {waveform.shape}")
    num_frames = audio_lib.num_video_frames(len(waveform), self.fps)
    step = self.block_frames or max(1, num_frames)
    blocks = []
    for first in range(0, num_frames, step):
      stop = min(num_frames, first + step)
      start, end = self.segment(first, stop, len(waveform))
      blocks.append(self.block(waveform[start:end], first, stop))
    return (np.concatenate(blocks) if blocks else np.zeros((0, self.dim), np.float32))


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


def _analysis_length(fps: float) -> int:
  """Samples of the log-mel analysis window: 25 ms, or the frame hop if longer."""
  return max(int(round(_ANALYSIS_SECONDS * audio_lib.SAMPLE_RATE)),
             int(round(audio_lib.SAMPLE_RATE / fps)))


def log_mel(waveform: np.ndarray, fps: float, num_mels: int) -> np.ndarray:
  """Log-mel power [T, num_mels] with one Hann window centred on each video frame."""
  hop = audio_lib.SAMPLE_RATE / fps  # samples per video frame
  window_length = _analysis_length(fps)
  fft_size = 1 << (window_length - 1).bit_length()
  num_frames = audio_lib.num_video_frames(len(waveform), fps)
  centres = np.round((np.arange(num_frames) + 0.5) * hop).astype(np.int64)  # [T]
  offsets = np.arange(window_length) - window_length // 2  # [L]
  padded = np.pad(waveform, (window_length, window_length))
  segments = padded[centres[:, None] + offsets[None, :] + window_length]  # [T, L]
  spectrum = np.fft.rfft(segments * np.hanning(window_length)[None, :], n=fft_size)  # [T, F]
  power = np.abs(spectrum) ** 2 / window_length
  return np.log(power @ mel_filterbank(num_mels, fft_size) + _LOG_FLOOR)


def log_mel_featurizer(fps: float, num_mels: int) -> SpeechFeaturizer:
  """Log-mel features: local (each frame from its analysis window), so any split is exact."""
  hop = audio_lib.SAMPLE_RATE / fps
  length = _analysis_length(fps)
  # Samples a frame's analysis window reaches past its frame (its centre rounds to a sample).
  reach = length - length // 2 - hop / 2 + (0.0 if hop.is_integer() else 0.5)
  return SpeechFeaturizer("log_mel", num_mels, fps, lambda waveform: log_mel(waveform, fps, num_mels),
                          block_frames=None, context_frames=math.ceil(max(0.0, reach) / hop),
                          lookahead_samples=max(0, math.ceil(reach)))


def wav2vec2_featurizer(bundle: audio_lib.Wav2Vec2Bundle, fps: float, layer: int,
                        block_seconds: float) -> SpeechFeaturizer:
  """Wav2Vec2 features in blocks of `block_seconds` of video frames, each block's forward on
  WAV2VEC2_CONTEXT_SECONDS before it to WAV2VEC2_LOOKAHEAD_SECONDS after it, that segment
  normalised on its own (zero mean, unit variance: the block normalisation)."""
  block_frames = max(1, round(block_seconds * fps))
  context_frames = math.ceil(WAV2VEC2_CONTEXT_SECONDS * fps)
  lookahead_samples = math.ceil(WAV2VEC2_LOOKAHEAD_SECONDS * audio_lib.SAMPLE_RATE)
  segment_seconds = ((block_frames + context_frames) / fps + WAV2VEC2_LOOKAHEAD_SECONDS)
  return SpeechFeaturizer(
      "wav2vec2", bundle.config.hidden_size, fps,
      # One forward per segment (a chunk as long as the longest segment).
      lambda waveform: audio_lib.audio_features(bundle, waveform, fps=fps, layer=layer,
                                                chunk_seconds=math.ceil(segment_seconds)),
      block_frames=block_frames, context_frames=context_frames,
      lookahead_samples=lookahead_samples)


def from_config(audio_config: ml_collections.ConfigDict, fps: float) -> SpeechFeaturizer:
  """The featuriser `audio_config` (`config.audio` of configs/motion.py) describes."""
  kind = audio_config.features
  if kind == "log_mel":
    return log_mel_featurizer(fps, audio_config.num_mels)
  if kind == "wav2vec2":
    if not audio_config.wav2vec2_dir:
      raise ValueError("config.audio.features is 'wav2vec2' but config.audio.wav2vec2_dir names "
                       "no local Hugging Face Wav2Vec2 directory")
    return wav2vec2_featurizer(audio_lib.load_wav2vec2(audio_config.wav2vec2_dir), fps,
                               audio_config.layer, audio_config.chunk_seconds)
  raise ValueError(f"config.audio.features is {kind!r}; choose one of {FEATURE_KINDS}")
