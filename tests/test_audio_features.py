"""Tests for vasa_jax.models.audio: Wav2Vec2 in Flax against PyTorch, loading, chunked features.

Every model is a tiny random Wav2Vec2 (hidden 32, 2 layers, 2 conv layers: one frame per 10
samples, receptive field 20 samples), in both layer-norm layouts.
"""

import dataclasses
import os
import wave

import av
import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.numpy
import torch
import transformers
from transformers.models.wav2vec2 import modeling_flax_wav2vec2 as hf_flax

from vasa_jax.data import media
from vasa_jax.models import audio

TINY_CONFIG = dict(
    hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
    conv_dim=(16, 16), conv_kernel=(10, 3), conv_stride=(5, 2), num_conv_pos_embeddings=16,
    num_conv_pos_embedding_groups=4)
# Layout name -> (do_stable_layer_norm, feat_extract_norm, conv_bias).
LAYOUTS = {
    "stable_layer_norm": (True, "layer", True),  # wav2vec2-large-lv60
    "post_norm": (False, "group", False),  # wav2vec2-base-960h
}
# Float32 agreement of two implementations of the same network (hidden states are O(1..10)).
TOLERANCE = 1e-4
# Positional conv radius of the tiny model, in frames (kernel 16: frames t - 8 .. t + 7).
POS_CONV_RADIUS = 8


def tiny_config(layout: str) -> transformers.Wav2Vec2Config:
  stable, norm, conv_bias = LAYOUTS[layout]
  return transformers.Wav2Vec2Config(**TINY_CONFIG, do_stable_layer_norm=stable,
                                     feat_extract_norm=norm, conv_bias=conv_bias)


def random_torch_model(config: transformers.Wav2Vec2Config, seed: int = 0):
  """A PyTorch Wav2Vec2Model whose every parameter (norm scales and biases too) is random."""
  torch.manual_seed(seed)
  model = transformers.Wav2Vec2Model(config).eval()
  with torch.no_grad():
    for name, parameter in model.named_parameters():
      if "original0" in name or "weight_g" in name:  # weight-norm magnitude
        parameter.uniform_(0.5, 1.5)
      elif parameter.ndim == 1 and "norm" in name and name.endswith("weight"):
        parameter.copy_(1.0 + 0.3 * torch.randn_like(parameter))
      elif parameter.ndim == 1:
        parameter.copy_(0.3 * torch.randn_like(parameter))
      else:
        parameter.copy_(torch.randn_like(parameter) / parameter[0].numel() ** 0.5)
  return model


def torch_hidden_states(model, waveform: np.ndarray) -> np.ndarray:
  with torch.no_grad():
    states = model(torch.from_numpy(waveform)[None], output_hidden_states=True).hidden_states
  return np.stack([state[0].numpy() for state in states])  # [L + 1, F, H]


def flax_hidden_states(bundle: audio.Wav2Vec2Bundle, waveform: np.ndarray,
                       num_valid: int | None = None) -> np.ndarray:
  num_valid = len(waveform) if num_valid is None else num_valid
  states = bundle.forward(bundle.params, waveform[None], np.array([num_valid], np.int32))
  return np.asarray(states)[:, 0]  # [L + 1, F, H]


def noise(num_samples: int, seed: int = 0) -> np.ndarray:
  return (0.3 * np.random.default_rng(seed).standard_normal(num_samples)).astype(np.float32)


@pytest.fixture(scope="module", params=list(LAYOUTS))
def reference(request):
  """(config, PyTorch model, its state_dict as numpy) of one layout."""
  config = tiny_config(request.param)
  model = random_torch_model(config)
  state_dict = {name: tensor.numpy() for name, tensor in model.state_dict().items()}
  return config, model, state_dict


@pytest.fixture(scope="module")
def stable_bundle():
  config = tiny_config("stable_layer_norm")
  state_dict = {name: tensor.numpy()
                for name, tensor in random_torch_model(config, seed=1).state_dict().items()}
  return audio.wav2vec2_bundle(config, audio.params_from_torch(state_dict, config))


def localised(params, zero_positional_conv: bool = False):
  """Parameters that make the network local in time: attention's values (and optionally the
  positional conv) are zeroed, so attention outputs a constant and a frame depends only on the
  frames within the positional conv's reach (or on its own samples only)."""
  flat = flax.traverse_util.flatten_dict(jax.tree_util.tree_map(np.asarray, params))
  for path in flat:
    if ("v_proj" in path and path[-1] == "kernel") or (
        zero_positional_conv and path[-1] == "weight_g"):
      flat[path] = np.zeros_like(flat[path])
  return flax.traverse_util.unflatten_dict(flat)


def test_matches_pytorch(reference):
  config, model, state_dict = reference
  bundle = audio.wav2vec2_bundle(config, audio.params_from_torch(state_dict, config))
  waveform = noise(4000)
  expected = torch_hidden_states(model, waveform)
  actual = flax_hidden_states(bundle, waveform)
  assert actual.shape == expected.shape == (config.num_hidden_layers + 1, 399, 32)
  for layer, (got, want) in enumerate(zip(actual, expected)):
    assert np.abs(got - want).max() < TOLERANCE, f"hidden state {layer}"
  # The layers do differ, so a wiring mistake could not hide behind equal hidden states.
  assert np.abs(expected[1] - expected[0]).max() > 0.1


def test_parameter_names_are_transformers_flax_names():
  """A transformers Flax checkpoint (stable layout) has exactly the parameters this model needs."""
  config = tiny_config("stable_layer_norm")
  module = hf_flax.FlaxWav2Vec2Module(config)
  abstract = jax.eval_shape(lambda key: module.init(key, jnp.zeros((1, 400))), jax.random.key(0))
  shapes = {path: leaf.shape
            for path, leaf in flax.traverse_util.flatten_dict(abstract["params"]).items()}
  del shapes[("masked_spec_embed",)]  # SpecAugment, training only
  assert shapes == audio.param_shapes(config)


def _legacy_ctc_state_dict(state_dict):
  """A ForCTC checkpoint of old PyTorch: "wav2vec2." prefix, lm_head, weight_g/weight_v."""
  legacy = {"lm_head.weight": np.zeros([10, 32], np.float32),
            "lm_head.bias": np.zeros([10], np.float32)}
  for name, tensor in state_dict.items():
    name = name.replace("parametrizations.weight.original0", "weight_g")
    name = name.replace("parametrizations.weight.original1", "weight_v")
    legacy["wav2vec2." + name] = tensor
  return legacy


@pytest.mark.parametrize("weights_format", ["safetensors", "bin", "legacy_ctc_bin", "ctc_msgpack"])
def test_loads_model_directory(reference, weights_format, tmp_path):
  config, model, state_dict = reference
  if weights_format in ("safetensors", "bin"):
    model.save_pretrained(tmp_path, safe_serialization=weights_format == "safetensors")
  else:
    config.to_json_file(tmp_path / audio.CONFIG_FILE)
  if weights_format == "legacy_ctc_bin":
    torch.save({name: torch.from_numpy(tensor)
                for name, tensor in _legacy_ctc_state_dict(state_dict).items()},
               tmp_path / "pytorch_model.bin")
  elif weights_format == "ctc_msgpack":
    tree = {"wav2vec2": {**audio.params_from_torch(state_dict, config),
                         "masked_spec_embed": np.zeros([32], np.float32)},
            "lm_head": {"kernel": np.zeros([32, 10], np.float32)}}
    (tmp_path / "flax_model.msgpack").write_bytes(flax.serialization.msgpack_serialize(tree))
  (tmp_path / audio.PREPROCESSOR_CONFIG_FILE).write_text('{"do_normalize": false}')
  bundle = audio.load_wav2vec2(str(tmp_path))
  assert not bundle.normalize
  assert bundle.config.do_stable_layer_norm == config.do_stable_layer_norm
  waveform = noise(2000, seed=3)
  np.testing.assert_allclose(flax_hidden_states(bundle, waveform),
                             torch_hidden_states(model, waveform), atol=TOLERANCE, rtol=0)


def test_refuses_mis_shaped_weights(tmp_path):
  config = tiny_config("post_norm")
  state_dict = {name: tensor.numpy()
                for name, tensor in random_torch_model(config).state_dict().items()}
  state_dict["encoder.layers.1.attention.k_proj.weight"] = np.zeros([32, 16], np.float32)
  config.to_json_file(tmp_path / audio.CONFIG_FILE)
  safetensors.numpy.save_file(state_dict, str(tmp_path / "model.safetensors"))
  message = (r"'encoder\.layers\.1\.attention\.k_proj\.weight' has shape \(32, 16\) in the file "
             r"but the model needs \(32, 32\)")
  with pytest.raises(ValueError, match=message):
    audio.load_wav2vec2(str(tmp_path))


def test_missing_directory_or_files(tmp_path):
  with pytest.raises(FileNotFoundError, match="does not exist"):
    audio.load_wav2vec2(str(tmp_path / "no_such_model"))
  with pytest.raises(FileNotFoundError, match="config.json"):
    audio.load_wav2vec2(str(tmp_path))
  tiny_config("post_norm").to_json_file(tmp_path / audio.CONFIG_FILE)
  with pytest.raises(FileNotFoundError, match="model.safetensors"):
    audio.load_wav2vec2(str(tmp_path))


def test_padding_does_not_change_valid_frames(reference):
  """Masked padding (group-norm statistics, positional conv, attention): a padded input's valid
  frames equal the unpadded input's, so chunks can share one static shape."""
  config, _, state_dict = reference
  bundle = audio.wav2vec2_bundle(config, audio.params_from_torch(state_dict, config))
  waveform = noise(2345, seed=4)
  unpadded = flax_hidden_states(bundle, waveform)
  padded = flax_hidden_states(bundle, np.pad(waveform, (0, 1655)), num_valid=len(waveform))
  assert unpadded.shape[1] == audio.conv_output_length(config, len(waveform)) == 233
  np.testing.assert_allclose(padded[:, :unpadded.shape[1]], unpadded, atol=1e-5, rtol=0)


def test_chunked_equals_unchunked_and_compiles_once(stable_bundle):
  """With attention's values zeroed the network is local (a frame sees frames within the
  positional conv's radius of 8), and the outer quarter of each overlap (19 frames) that chunk
  edges spoil is not used: chunked features equal unchunked ones everywhere, up to float32
  rounding. Real models attend to the whole input and only approximate this."""
  bundle = audio.wav2vec2_bundle(stable_bundle.config, localised(stable_bundle.params))
  waveform = noise(16_123, seed=5)  # 1 s: 5 chunks of 0.25 s, the last one padded
  chunked = audio.chunked_hidden_states(bundle, waveform, chunk_seconds=0.25,
                                        overlap_seconds=0.05)
  assert bundle.forward._cache_size() == 1  # pylint: disable=protected-access
  unchunked = audio.chunked_hidden_states(bundle, waveform, chunk_seconds=1.1)
  assert bundle.forward._cache_size() == 2  # pylint: disable=protected-access
  assert chunked.shape == unchunked.shape == (3, 1611, 32)
  overlap_frames = audio.conv_output_length(bundle.config, 4000) - 320
  assert overlap_frames // 4 > POS_CONV_RADIUS
  np.testing.assert_allclose(chunked, unchunked, atol=2e-5, rtol=0)
  # A layer alone is that layer of all of them.
  last = audio.chunked_hidden_states(bundle, waveform, layer=-1, chunk_seconds=0.25,
                                     overlap_seconds=0.05)
  np.testing.assert_allclose(last, chunked[-1], atol=1e-6, rtol=0)


def test_single_chunk_is_the_unpadded_forward(reference):
  config, _, state_dict = reference
  bundle = audio.wav2vec2_bundle(config, audio.params_from_torch(state_dict, config))
  waveform = noise(3000, seed=6)
  features = audio.chunked_hidden_states(bundle, waveform, chunk_seconds=0.5, overlap_seconds=0.1)
  np.testing.assert_allclose(
      features, flax_hidden_states(bundle, audio.normalize_waveform(waveform)), atol=1e-5,
      rtol=0)


@pytest.mark.parametrize("seconds, frames", [(0.1, 3), (0.5, 13), (1.0, 25), (1.01, 25),
                                             (1.02, 26), (2.345, 59)])
def test_output_frames_at_25_fps(stable_bundle, seconds, frames):
  """num_frames = N / 640 samples per frame rounded, a half up (0.1 s = 2.5 frames -> 3)."""
  num_samples = round(seconds * audio.SAMPLE_RATE)
  assert audio.num_video_frames(num_samples, 25.0) == frames
  features = audio.audio_features(stable_bundle, noise(num_samples), fps=25.0,
                                  chunk_seconds=1.0)
  assert features.shape == (3, frames, 32) and features.dtype == np.float32


def test_event_peaks_at_its_frame(stable_bundle):
  """A click at time t changes only the features of the video frame that contains t.

  The network is made frame-local (zero attention values and positional conv), so a click at
  sample s changes the two Wav2Vec2 frames whose 20-sample receptive fields hold s; placed at the
  centre of video frame k, it is at the centre of frame k's interpolation interval and no other
  video frame's features may change.
  """
  bundle = dataclasses.replace(
      audio.wav2vec2_bundle(stable_bundle.config,
                            localised(stable_bundle.params, zero_positional_conv=True)),
      normalize=False)
  fps, num_samples = 25.0, 16_000
  silence = np.zeros([num_samples], np.float32)
  baseline = audio.audio_features(bundle, silence, fps, layer=-1, chunk_seconds=1.0)
  assert baseline.shape == (25, 32)
  for frame in (7, 20):
    click = silence.copy()
    click[round((frame + 0.5) / fps * audio.SAMPLE_RATE)] = 0.9
    change = np.abs(audio.audio_features(bundle, click, fps, layer=-1, chunk_seconds=1.0)
                    - baseline).max(axis=-1)
    assert np.argmax(change) == frame
    assert change[frame] > 0.1
    assert np.delete(change, frame).max() < 1e-5


@pytest.mark.parametrize("fps", [25.0, 30.0])
def test_released_frame_geometry_maps_frame_centres(fps):
  """For the released models' conv stack (50 Hz, 400-sample receptive field), a Wav2Vec2 frame
  peaks at the video frame whose interval holds the frame's centre time."""
  config = transformers.Wav2Vec2Config()
  assert (audio.frame_stride(config), audio.receptive_field(config)) == (320, 400)
  num_samples = 3 * audio.SAMPLE_RATE
  num_features = audio.conv_output_length(config, num_samples)
  assert num_features == 149
  for index in range(2, num_features - 2):
    features = np.zeros([num_features, 1], np.float32)
    features[index] = 1.0
    video = audio.to_video_rate(features, config, num_samples, fps)[:, 0]
    assert video.shape == (audio.num_video_frames(num_samples, fps),)
    centre_time = (index * 320 + 200) / audio.SAMPLE_RATE
    assert video.max() > 0 and np.argmax(video) == int(centre_time * fps), index


def test_layer_weighted_sum():
  hidden = jax.random.normal(jax.random.key(0), (2, 3, 5, 4), jnp.bfloat16)  # [B, L + 1, T, H]
  module = audio.LayerWeightedSum()
  variables = module.init(jax.random.key(1), hidden)
  mean = module.apply(variables, hidden)
  assert mean.dtype == jnp.float32 and mean.shape == (2, 5, 4)
  np.testing.assert_allclose(mean, hidden.astype(jnp.float32).mean(axis=1), atol=1e-6)
  logits = jnp.array([2.0, -1.0, 0.5])
  weighted = module.apply({"params": {"layer_logits": logits}}, hidden)
  expected = jnp.einsum("l,blth->bth", jax.nn.softmax(logits), hidden.astype(jnp.float32))
  np.testing.assert_allclose(weighted, expected, atol=1e-6)


def test_rejects_bad_arguments(stable_bundle):
  with pytest.raises(ValueError, match="shorter than one Wav2Vec2 frame"):
    audio.audio_features(stable_bundle, np.zeros([10], np.float32))
  with pytest.raises(ValueError, match="layer 3 does not exist"):
    audio.audio_features(stable_bundle, noise(1000), layer=3)
  with pytest.raises(ValueError, match="at most half a chunk"):
    audio.audio_features(stable_bundle, noise(1000), chunk_seconds=1.0, overlap_seconds=0.6)
  with pytest.raises(ValueError, match="not supported"):
    audio.check_config(transformers.Wav2Vec2Config(add_adapter=True))


def test_load_audio_stereo_44k(tmp_path):
  """A stereo 44.1 kHz file becomes mono 16 kHz of the same duration and pitch."""
  path, rate, seconds = str(tmp_path / "stereo.wav"), 44_100, 1.5
  tone = (0.5 * np.sin(2 * np.pi * 440.0 * np.arange(round(seconds * rate)) / rate)).astype(
      np.float32)
  with av.open(path, "w") as container:
    stream = container.add_stream("pcm_s16le", rate=rate, layout="stereo")
    frame = av.AudioFrame.from_ndarray(np.stack([tone, tone]), format="fltp", layout="stereo")
    frame.sample_rate, frame.pts = rate, 0
    container.mux(stream.encode(frame))
    container.mux(stream.encode(None))
  waveform = audio.load_audio(path)
  assert waveform.dtype == np.float32 and waveform.shape == (round(seconds * audio.SAMPLE_RATE),)
  spectrum = np.abs(np.fft.rfft(waveform * np.hanning(len(waveform))))
  assert abs(np.argmax(spectrum) * audio.SAMPLE_RATE / len(waveform) - 440.0) < 2.0


def test_load_audio_zero_length(tmp_path):
  path = str(tmp_path / "empty.wav")
  with wave.open(path, "wb") as writer:
    writer.setnchannels(1)
    writer.setsampwidth(2)
    writer.setframerate(16_000)
    writer.writeframes(b"")
  with pytest.raises(media.NoAudioError, match="no samples"):
    audio.load_audio(path)
  with pytest.raises(media.MediaError, match="no such file"):
    audio.load_audio(os.path.join(tmp_path, "missing.wav"))
