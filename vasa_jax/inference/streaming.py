"""Streaming: speech features and video frames made as audio chunks arrive (as if live).

`StreamingFeatures` turns audio chunks into speech features block by block as their audio
arrives; `stream_motion` feeds them to a `MotionStream`, which generates each W-frame window once
its features are in, and `stream_frames` the motion through the decoder.
`talking_head.render_video(..., stream=True)` and `python -m vasa_jax.sample --stream` use them.

The stream does the offline work, in the offline pieces, as the audio arrives: the same feature
blocks (`speech_features.SpeechFeaturizer`: fixed context, per-block waveform normalisation) and
the same motion windows (`sampler.window_plan`, each conditioned on the previous window's last K
frames, noise `fold_in(key(seed), i)`). So the streamed motion equals `MotionSampler.generate` on
`featurizer(waveform)`, and each chunk's work is the blocks and windows it completes: it does
not grow with the stream. The first frame comes one window of audio (W / fps seconds, plus the
features' look-ahead) after the stream starts, plus the compute of one block, one window and
one decoder call.
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

class StreamingFeatures:
  """Speech features of audio that arrives in chunks: the featuriser's blocks, each as soon as
  its audio is in.

  A block of frames [first, stop) is computed once the samples its call reads
  (`featurizer.segment`) have arrived: the featuriser's `block_frames` at a time (log-mel, local:
  every frame as soon as its own samples are in), and the rest of the frames by `finish`. These
  are the blocks offline features are made of, so the features equal `featurizer(waveform)`
  exactly, and each block reads at most its block, its context and its look-ahead: the work per
  frame does not grow with the stream. Only the samples the next block needs are kept.
  """

  def __init__(self, featurizer: speech_features.SpeechFeaturizer):
    self.featurizer = featurizer
    self._samples = np.zeros(0, np.float32)  # received audio from sample `_offset` on
    self._offset = 0
    self.num_samples = 0  # samples received
    self.num_frames = 0  # frames emitted
    self.samples_computed = []  # samples each feature call read, in order (its work)

  def push(self, samples: np.ndarray) -> np.ndarray:
    """Features [n, A] of the frames this chunk of 16 kHz samples [c] completes (n may be 0)."""
    self._samples = np.concatenate([self._samples, np.asarray(samples, np.float32)])
    self.num_samples += len(samples)
    blocks = []
    while True:
      stop = self._next_stop(self._ready_frames())
      if stop is None:
        break
      blocks.append(self._emit(stop, final=False))
    return self._concatenate(blocks)

  def finish(self) -> np.ndarray:
    """Features [n, A] of the remaining frames, at the end of the audio."""
    num_frames = audio_lib.num_video_frames(self.num_samples, self.featurizer.fps)
    blocks = []
    while self.num_frames < num_frames:
      step = self.featurizer.block_frames or num_frames
      blocks.append(self._emit(min(num_frames, self.num_frames + step), final=True))
    return self._concatenate(blocks)

  def _ready_frames(self) -> int:
    """Frames n whose samples (up to frame n - 1's look-ahead) have all arrived."""
    hop = self.featurizer.hop
    ready = max(0, math.floor((self.num_samples - self.featurizer.lookahead_samples) / hop))
    while ready > 0 and math.ceil(ready * hop) + self.featurizer.lookahead_samples > (
        self.num_samples):
      ready -= 1
    return ready

  def _next_stop(self, ready: int) -> Optional[int]:
    """The end of the next block that can be computed now, or None."""
    block = self.featurizer.block_frames
    stop = ready if block is None else self.num_frames + block
    return stop if self.num_frames < stop <= ready else None

  def _emit(self, stop: int, final: bool) -> np.ndarray:
    first = self.num_frames
    start, end = self.featurizer.segment(first, stop, self.num_samples)
    if not final and end != math.ceil(stop * self.featurizer.hop) + (
        self.featurizer.lookahead_samples):
      raise AssertionError(f"frames [{first}, {stop}) emitted before their samples arrived")
    features = self.featurizer.block(self._samples[start - self._offset:end - self._offset],
                                     first, stop)
    self.samples_computed.append(end - start)
    self.num_frames = stop
    keep_from, _ = self.featurizer.segment(stop, stop + 1, self.num_samples)
    self._samples = self._samples[keep_from - self._offset:]
    self._offset = keep_from
    return features

  def _concatenate(self, blocks: list[np.ndarray]) -> np.ndarray:
    return (np.concatenate(blocks) if blocks else
            np.zeros((0, self.featurizer.dim), np.float32))


def audio_chunks(waveform: np.ndarray, chunk_frames: int, fps: float) -> Iterator[np.ndarray]:
  """The waveform in chunks of `chunk_frames` video frames' worth of samples (as if live)."""
  size = max(1, round(chunk_frames * audio_lib.SAMPLE_RATE / fps))
  for start in range(0, len(waveform), size):
    yield waveform[start:start + size]


def stream_motion(head: "talking_head.TalkingHead", chunks: Iterable[np.ndarray],
                  **controls) -> Iterator[np.ndarray]:
  """Motion [n, M] (n may be 0: the windows completed so far) as 16 kHz audio chunks [c] arrive,
  then the last window's at the end.

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
