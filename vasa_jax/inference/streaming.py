"""Streaming: speech features and video frames made as audio chunks arrive (as if live).

`StreamingFeatures` turns audio chunks into speech-feature frames as soon as their audio is in;
`stream_motion` feeds them through the motion sampler's streaming API, and `stream_frames` the
motion through the decoder, frame by frame. `talking_head.render_video(..., stream=True)` and `python -m vasa_jax.sample --stream` use
them.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Iterable, Iterator, Optional

import jax
import numpy as np

from vasa_jax.data import speech_features
from vasa_jax.models import audio as audio_lib

if TYPE_CHECKING:
  from vasa_jax.inference import talking_head

# Streaming speech features: seconds of audio past a frame's centre that its features need
# (log-mel: half its shortest, 25 ms, analysis window; Wav2Vec2: a little future context for its
# attention), and seconds of earlier audio each feature call sees.
STREAM_LOOKAHEAD_SECONDS = {"log_mel": 0.0125, "wav2vec2": 0.1}
STREAM_CONTEXT_SECONDS = {"log_mel": 0.1, "wav2vec2": 2.0}


class StreamingFeatures:
  """Speech features of audio that arrives in chunks, one frame as soon as its audio is in.

  A frame is emitted once its own audio and `lookahead_seconds` past its centre have arrived;
  each call computes the new frames from a segment starting `context_seconds` before them
  (log-mel frames equal the offline features; Wav2Vec2's only approximate them, as its attention
  and normalisation see the segment, not the whole recording, and each new segment length
  compiles its forward once). Over a stream, `push` and `finish` emit
  `audio.num_video_frames(total samples)` frames, as many as the offline features.
  """

  def __init__(self, featurizer: speech_features.SpeechFeaturizer,
               lookahead_seconds: Optional[float] = None,
               context_seconds: Optional[float] = None):
    self.featurizer = featurizer
    self.hop = audio_lib.SAMPLE_RATE / featurizer.fps  # samples per video frame
    lookahead = STREAM_LOOKAHEAD_SECONDS[featurizer.kind] if lookahead_seconds is None else (
        lookahead_seconds)
    context = STREAM_CONTEXT_SECONDS[featurizer.kind] if context_seconds is None else (
        context_seconds)
    self.lookahead_samples = max(0.0, lookahead * audio_lib.SAMPLE_RATE - 0.5 * self.hop)
    self.context_frames = math.ceil(context * featurizer.fps)
    self._samples = np.zeros(0, np.float32)  # received audio from sample `_offset` on
    self._offset = 0
    self.num_samples = 0  # samples received
    self.num_frames = 0  # frames emitted

  def push(self, samples: np.ndarray) -> np.ndarray:
    """Features [n, A] of the frames this chunk of 16 kHz samples [c] completes (n may be 0)."""
    self._samples = np.concatenate([self._samples, np.asarray(samples, np.float32)])
    self.num_samples += len(samples)
    return self._emit(max(0, math.floor((self.num_samples - self.lookahead_samples) / self.hop)))

  def finish(self) -> np.ndarray:
    """Features [n, A] of the remaining frames, at the end of the audio."""
    return self._emit(audio_lib.num_video_frames(self.num_samples, self.featurizer.fps))

  def _emit(self, ready: int) -> np.ndarray:
    if ready <= self.num_frames:
      return np.zeros((0, self.featurizer.dim), np.float32)
    first = max(0, self.num_frames - self.context_frames)  # first frame of the segment
    start = math.floor(first * self.hop)
    features = self.featurizer(self._samples[start - self._offset:])  # [frames - first, A]
    emitted = features[self.num_frames - first:ready - first]
    self.num_frames = ready
    keep_from = math.floor(max(0, ready - self.context_frames) * self.hop)
    self._samples = self._samples[keep_from - self._offset:]
    self._offset = keep_from
    return emitted


def audio_chunks(waveform: np.ndarray, chunk_frames: int, fps: float) -> Iterator[np.ndarray]:
  """The waveform in chunks of `chunk_frames` video frames' worth of samples (as if live)."""
  size = max(1, round(chunk_frames * audio_lib.SAMPLE_RATE / fps))
  for start in range(0, len(waveform), size):
    yield waveform[start:start + size]


def stream_motion(head: "talking_head.TalkingHead", chunks: Iterable[np.ndarray],
                  **controls) -> Iterator[np.ndarray]:
  """Motion [c, M] (c may be 0) as 16 kHz audio chunks [c] arrive.

  controls: gaze, distance, emotion, seed, lambda_audio, lambda_gaze, num_steps, pose_control of
  `MotionSampler.start_stream`.
  """
  features = StreamingFeatures(head.featurizer)

  def feature_chunks():
    for chunk in chunks:
      yield features.push(chunk)
    yield features.finish()

  yield from head.sampler.stream(feature_chunks(), **controls)


def stream_frames(head: "talking_head.TalkingHead", appearance: tuple[jax.Array, jax.Array],
                  chunks: Iterable[np.ndarray], **controls) -> Iterator[np.ndarray]:
  """Video frames uint8 [S, S, 3], one by one, as 16 kHz audio chunks [c] arrive.

  appearance: `head.encode(face)`; controls: as for `stream_motion`.
  """
  for motion in stream_motion(head, chunks, **controls):
    for batch in head.render(appearance, motion):
      yield from batch
