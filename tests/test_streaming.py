"""vasa_jax.inference.streaming: a stream does the offline work, in the offline pieces.

The streamed features and motion equal the offline ones exactly (the same feature blocks and
motion windows), and the work per chunk (feature samples read, window calls) does not grow with
the length of the stream.
"""

import types

import flax.linen as nn
import jax
import numpy as np
import pytest
import transformers

from configs import motion as motion_config_lib
from tests import test_audio_features
from tests import test_sampler
from vasa_jax.data import speech_features
from vasa_jax.data.synthtalk import dataset as synthtalk
from vasa_jax.inference import sampler as sampler_lib
from vasa_jax.inference import streaming
from vasa_jax.inference import talking_head
from vasa_jax.models import audio as audio_lib
from vasa_jax.models import motion_dit

FPS = 25.0
BLOCK_SECONDS = 0.4  # Wav2Vec2 blocks of 10 frames in these tests


@pytest.fixture(scope="module")
def wav2vec2():
  """A featuriser on a tiny random Wav2Vec2 with the released models' conv stack (50 frames/s;
  every frame depends on its whole segment)."""
  config = transformers.Wav2Vec2Config(
      hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
      conv_dim=(16,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4,
      do_stable_layer_norm=True, feat_extract_norm="layer", conv_bias=True)
  model = test_audio_features.random_torch_model(config, seed=3)
  state_dict = {name: tensor.numpy() for name, tensor in model.state_dict().items()}
  bundle = audio_lib.wav2vec2_bundle(config, audio_lib.params_from_torch(state_dict, config))
  return speech_features.wav2vec2_featurizer(bundle, FPS, layer=-1, block_seconds=BLOCK_SECONDS)


@pytest.fixture(scope="module")
def sampler():
  """A tiny MotionDiT with random weights and statistics (every input changes the output)."""
  config = motion_config_lib.get_config("tiny")
  model = motion_dit.MotionDiT.from_config(config.model)
  variables = jax.jit(model.init)(jax.random.key(0, impl="rbg"),
                                  *test_sampler._dummy_inputs(model))  # pylint: disable=protected-access
  rng = np.random.default_rng(0)
  statistics = {name: {"mean": rng.normal(size=shape).astype(np.float32),
                       "std": rng.uniform(0.5, 2.0, size=shape).astype(np.float32)}
                for name, shape in sampler_lib.statistics_shapes(config.model).items()}
  return sampler_lib.MotionSampler(config, nn.meta.unbox(variables["params"]), statistics,
                                   num_steps=2)


def _speech(seconds, seed=0):
  return synthtalk.synthetic_speech(np.random.default_rng(seed), seconds, 180.0)


def _stream_features(featurizer, waveform, chunk_frames):
  """(features [T, A], frames emitted per chunk, samples read per feature call)."""
  features = streaming.StreamingFeatures(featurizer)
  parts = [features.push(chunk) for chunk in streaming.audio_chunks(waveform, chunk_frames, FPS)]
  parts.append(features.finish())
  return np.concatenate(parts), [len(part) for part in parts], features.samples_computed


@pytest.mark.parametrize("chunk_frames", [1, 7, 33])
def test_wav2vec2_stream_equals_offline_blocks(wav2vec2, chunk_frames):
  waveform = _speech(3.37)
  offline = wav2vec2(waveform)
  streamed, emitted, _ = _stream_features(wav2vec2, waveform, chunk_frames)
  assert offline.shape == (audio_lib.num_video_frames(len(waveform), FPS), wav2vec2.dim)
  np.testing.assert_array_equal(streamed, offline)
  # Whole blocks only, as soon as a block's audio (and its look-ahead) is in.
  assert all(count % wav2vec2.block_frames == 0 for count in emitted[:-1]), emitted


def test_wav2vec2_blocks_see_their_context_only(wav2vec2):
  """A block's features do not change with audio outside its segment, and do change with audio
  inside it (the segment's normalisation and attention see all of it)."""
  waveform = _speech(3.0)
  features = wav2vec2(waveform)
  block = slice(30, 40)  # frames 30..39: segment from frame 30 - 50 (0) to 40 + look-ahead
  _, end = wav2vec2.segment(30, 40, len(waveform))
  changed_after = waveform.copy()
  changed_after[end:] *= 3.0
  np.testing.assert_array_equal(wav2vec2(changed_after)[block], features[block])
  changed_inside = waveform.copy()
  changed_inside[:int(0.2 * audio_lib.SAMPLE_RATE)] *= 3.0  # 1 s before the block
  assert np.abs(wav2vec2(changed_inside)[block] - features[block]).max() > 1e-3


def test_log_mel_stream_equals_offline_frame_by_frame():
  featurizer = speech_features.log_mel_featurizer(FPS, 40)
  waveform = _speech(2.03, seed=1)
  offline = featurizer(waveform)
  for chunk_frames in (1, 7, 60):
    streamed, emitted, _ = _stream_features(featurizer, waveform, chunk_frames)
    np.testing.assert_allclose(streamed, offline, rtol=0, atol=1e-5)
    assert max(emitted) <= chunk_frames  # a frame as soon as its samples are in


def test_feature_work_per_block_does_not_grow(wav2vec2):
  """Every block of a 12 s stream reads the same samples as the second one: its block, its
  context and its look-ahead, however much audio came before."""
  waveform = _speech(12.0, seed=2)
  _, _, samples = _stream_features(wav2vec2, waveform, chunk_frames=4)
  hop = audio_lib.SAMPLE_RATE / FPS
  steady = round((wav2vec2.block_frames + wav2vec2.context_frames) * hop
                 + wav2vec2.lookahead_samples)
  assert len(samples) == 30  # 300 frames in blocks of 10
  assert samples[0] < steady  # no context before the first block
  # From the block after the context on, each call reads exactly the steady segment.
  first_full = wav2vec2.context_frames // wav2vec2.block_frames
  assert samples[first_full:-1] == [steady] * (len(samples) - first_full - 1), samples


@pytest.mark.parametrize("chunk_frames", [3, 25, 40])
def test_motion_stream_equals_offline_and_costs_one_window_per_w_frames(sampler, chunk_frames):
  features = test_sampler._features(107, seed=4)  # pylint: disable=protected-access
  offline = sampler.generate(features, seed=5, **test_sampler.CONTROLS)
  motion_stream = sampler.start_stream(seed=5, **test_sampler.CONTROLS)
  parts, windows = [], []
  for start in range(0, len(features), chunk_frames):
    parts.append(motion_stream.push(features[start:start + chunk_frames]))
    windows.append(motion_stream.num_windows)
    # Windows so far: one per W frames of audio in, never more (no window is redone).
    assert windows[-1] == min(start + chunk_frames, len(features)) // sampler.window
  parts.append(motion_stream.finish())
  assert motion_stream.num_windows == len(sampler_lib.window_plan(107, sampler.window))
  np.testing.assert_array_equal(np.concatenate(parts), offline)


def test_motion_push_checks_features(sampler):
  motion_stream = sampler.start_stream(**test_sampler.CONTROLS)
  assert motion_stream.push(np.zeros((0, sampler.audio_dim))).shape == (0, sampler.motion_dim)
  assert motion_stream.finish().shape == (0, sampler.motion_dim)
  with pytest.raises(ValueError, match="audio features must be"):
    motion_stream.push(np.zeros((3, sampler.audio_dim + 1)))


def test_stream_motion_equals_offline_with_constant_work_per_chunk(sampler):
  """Audio to motion, live: the motion of offline sampling on the offline features, and per
  W frames of audio one window call and the same feature samples, from start to end."""
  featurizer = speech_features.log_mel_featurizer(FPS, sampler.audio_dim)
  head = types.SimpleNamespace(featurizer=featurizer, sampler=sampler)
  waveform = _speech(8.1, seed=5)
  offline = sampler.generate(featurizer(waveform), seed=7)
  windows_before = []
  calls_before = []
  original_window_fn = sampler.sample_window

  def counting_window(*args, **kwargs):
    calls_before.append(None)
    return original_window_fn(*args, **kwargs)

  sampler.sample_window = counting_window
  try:
    chunks = streaming.audio_chunks(waveform, sampler.window, FPS)
    parts = []
    for motion in streaming.stream_motion(head, chunks, seed=7):
      parts.append(motion)
      windows_before.append(len(calls_before))
  finally:
    del sampler.sample_window
  np.testing.assert_array_equal(np.concatenate(parts), offline)
  calls_per_chunk = np.diff([0] + windows_before)
  # One window per chunk of W frames (log-mel needs no look-ahead at 25 fps), the short last
  # window at the end.
  assert list(calls_per_chunk[:8]) == [1] * 8 and calls_per_chunk.sum() == len(
      sampler_lib.window_plan(len(offline), sampler.window)), calls_per_chunk


def test_decoder_batches_waste_little_on_a_window():
  """A last, shorter decoder batch runs padded to the next power of two (at most the batch size):
  a stream's W = 25 frame windows decode 8 + 8 + 8 + 1 frames, not 4 x 8."""
  assert [talking_head.decoder_batch(count, 8) for count in range(1, 9)] == [1, 2, 4, 4, 8, 8, 8, 8]
  assert [talking_head.decoder_batch(count, 6) for count in (3, 5, 6)] == [4, 6, 6]
