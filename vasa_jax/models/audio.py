"""Wav2Vec2 speech features for the motion generator, aligned to the video frame rate (SPEC 1.3).

The diffusion transformer is conditioned on per-frame audio features `A = {f_i}` of a pretrained
Wav2Vec2. This module runs Wav2Vec2 in Flax from a local Hugging Face model directory (nothing is
downloaded) and resamples its hidden states to the video frame rate.

Model. transformers' `FlaxWav2Vec2Model` implements only the "stable layer norm" layout
(`do_stable_layer_norm=True` with `feat_extract_norm="layer"`: wav2vec2-large-lv60 and its
fine-tunes) and raises NotImplementedError for the original layout of facebook/wav2vec2-base-960h
(`do_stable_layer_norm=False`: post-norm encoder layers, the encoder's layer norm applied before
the layers; `feat_extract_norm="group"`: group norm on the first conv only). `Wav2Vec2Model` runs
both. It reuses transformers' Flax submodules (layer-norm conv layers, feature projection,
positional conv with weight norm, attention, feed-forward, the stable-layout encoder) and adds the
group-norm conv layers and the post-norm encoder. Parameter names are the PyTorch checkpoint's
(`encoder.layers.3.attention.q_proj.weight` is params["encoder"]["layers"]["3"]["attention"]
["q_proj"]["kernel"]), so PyTorch and Flax checkpoints both load. The model returns every hidden
state, as transformers does with `output_hidden_states=True`: [L + 1, B, F, H], the encoder's input
(the embedding output) and then each layer's output.

Padding. The forward takes each row's count of valid samples. Frames computed from padding are
left out of the group norm's statistics, zeroed before the positional conv and masked out of
attention, so the valid frames of a zero-padded input equal those of the unpadded input (up to
float rounding). Every chunk of a recording can thus share one static shape (one compilation)
without the padding changing its features.

Feature extraction (`audio_features`; the repo's speech features call it once per block segment,
so their normalisation is per segment: `vasa_jax.data.speech_features.wav2vec2_featurizer`):
  1. Normalisation. If the bundle says so (`normalize`, from the model directory's
     preprocessor_config.json `do_normalize`, True when absent as in `Wav2Vec2FeatureExtractor`),
     the whole waveform is normalised to zero mean and unit variance,
     (x - mean) / sqrt(var + 1e-7), as `Wav2Vec2FeatureExtractor` does. Both released layouts'
     preprocessors (base-960h and large-lv60) set it.
  2. Chunks. The waveform is cut into chunks of `chunk_seconds` (10 s by default) that overlap by
     `overlap_seconds` (a fifth of a chunk by default). Chunk starts are multiples of the conv
     stack's total stride, so chunk frames fall on the frame grid of the whole recording. Every
     chunk has the same static shape (the last one is zero-padded and masked as above), so the
     jitted forward compiles once per chunk shape and its memory does not grow with the length
     of the recording. In an overlap of O frames, the outer quarter next to each chunk's edge
     comes only from the other chunk (the edge lacks context) and the middle half is cross-faded
     linearly. A recording no longer than one chunk is processed in one piece and gets the
     features of an unpadded forward. Longer ones differ from an unchunked forward because
     attention (and, in the group-norm layout, the first conv's normalisation statistics) sees
     one chunk at a time.
  3. Frame rate. Wav2Vec2 frame g covers samples [g * stride, g * stride + receptive_field)
     (stride 320 and receptive field 400 samples, i.e. 50 Hz, for the released models) and is
     placed at its centre. Video frame k covers [k, k + 1) * samples_per_frame with
     samples_per_frame = 16000 / fps, and its feature is the Wav2Vec2 features linearly
     interpolated in time at its centre, (k + 0.5) / fps seconds (clamped to the first and last
     Wav2Vec2 frames at the ends). A recording of N samples gives
     num_frames = floor(N / samples_per_frame + 0.5) frames (N / samples_per_frame rounded, a
     half up).
All layers (`layer=None`) give [L + 1, num_frames, H] for `LayerWeightedSum`, a learned softmax
combination of the layers.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Any, Callable, Mapping, Optional

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from transformers import Wav2Vec2Config
from transformers.models.wav2vec2 import modeling_flax_wav2vec2 as hf_flax

from vasa_jax.data import media

Dtype = Any

# The sample rate every Wav2Vec2 checkpoint was trained on.
SAMPLE_RATE = 16_000
# Files of a Hugging Face model directory, the weight files in order of preference.
CONFIG_FILE = "config.json"
PREPROCESSOR_CONFIG_FILE = "preprocessor_config.json"
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "flax_model.msgpack")
# Prefix of the base model's tensors in the checkpoints of task models (ForCTC, ForPreTraining).
_BASE_MODEL_PREFIX = "wav2vec2"
# PyTorch's GroupNorm epsilon (the group-norm conv layer of the original layout).
_GROUP_NORM_EPSILON = 1e-5
# Wav2Vec2FeatureExtractor's variance epsilon in the waveform normalisation.
_NORMALIZE_EPSILON = 1e-7
# Flax leaf name -> PyTorch state_dict leaf names (more than one where releases differ: old
# checkpoints store weight norm as weight_g/weight_v, newer ones as torch parametrizations).
_TORCH_LEAF_NAMES = {
    "kernel": ("weight",),
    "scale": ("weight",),
    "bias": ("bias",),
    "weight_g": ("weight_g", "parametrizations.weight.original0"),
    "weight_v": ("weight_v", "parametrizations.weight.original1"),
}
# Most problems listed in one error message.
_MAX_LISTED_PROBLEMS = 8
# Default overlap of consecutive chunks, as a fraction of the chunk length.
_DEFAULT_OVERLAP_FRACTION = 0.2
# Fewest frames in the overlap of two chunks (a quarter at each edge, half cross-faded).
_MIN_OVERLAP_FRAMES = 4


def check_config(config: Wav2Vec2Config) -> None:
  """Raises ValueError for a Wav2Vec2 configuration `Wav2Vec2Model` cannot run."""
  if config.feat_extract_norm not in ("group", "layer"):
    raise ValueError(f"feat_extract_norm must be 'group' or 'layer', got "
                     f"{config.feat_extract_norm!r}")
  if config.add_adapter:
    raise ValueError("Wav2Vec2 adapter layers (add_adapter=True) are not supported")
  if not len(config.conv_dim) == len(config.conv_kernel) == len(config.conv_stride):
    raise ValueError(f"conv_dim, conv_kernel and conv_stride must have one entry per conv layer, "
                     f"got {config.conv_dim}, {config.conv_kernel}, {config.conv_stride}")


def conv_output_length(config: Wav2Vec2Config, num_samples):
  """Frames the conv feature encoder makes of `num_samples` samples (int or integer array)."""
  for kernel, stride in zip(config.conv_kernel, config.conv_stride):
    num_samples = (num_samples - kernel) // stride + 1
  return num_samples


def frame_stride(config: Wav2Vec2Config) -> int:
  """Samples between consecutive Wav2Vec2 frames (320 for the released models: 50 Hz)."""
  return math.prod(config.conv_stride)


def receptive_field(config: Wav2Vec2Config) -> int:
  """Samples one Wav2Vec2 frame's conv features see (400 for the released models)."""
  field, jump = 1, 1
  for kernel, stride in zip(config.conv_kernel, config.conv_stride):
    field += (kernel - 1) * jump
    jump *= stride
  return field


def num_video_frames(num_samples: int, fps: float) -> int:
  """Video frames of `num_samples` samples at 16 kHz: num_samples / (16000 / fps), a half up."""
  return math.floor(num_samples * fps / SAMPLE_RATE + 0.5)


def _frame_mask(num_frames: int, num_valid_frames: Optional[jax.Array]) -> Optional[jax.Array]:
  """[B, num_frames] bool, True on valid frames; None (all valid) without valid counts."""
  if num_valid_frames is None:
    return None
  return jnp.arange(num_frames)[None, :] < num_valid_frames[:, None]


class _GroupNormConvLayer(nn.Module):
  """Conv, group norm with one group per channel (statistics over valid frames), activation."""
  config: Wav2Vec2Config  # the model's configuration
  layer_id: int = 0  # index of the conv layer
  dtype: Dtype = jnp.float32  # compute dtype (the group norm is computed in float32)

  @nn.compact
  def __call__(self, features: jax.Array, num_valid_frames: Optional[jax.Array]) -> jax.Array:
    # features [B, T, Cin], num_valid_frames [B] (of the output) or None -> [B, T', Cout]
    channels = self.config.conv_dim[self.layer_id]
    features = nn.Conv(
        channels, (self.config.conv_kernel[self.layer_id],),
        strides=(self.config.conv_stride[self.layer_id],), padding="VALID",
        use_bias=self.config.conv_bias, dtype=self.dtype, name="conv")(features)
    mask = _frame_mask(features.shape[1], num_valid_frames)
    if mask is not None:
      mask = jnp.broadcast_to(mask[:, :, None], features.shape)
    features = nn.GroupNorm(
        num_groups=channels, epsilon=_GROUP_NORM_EPSILON, use_fast_variance=False,
        dtype=jnp.float32, name="layer_norm")(features.astype(jnp.float32), mask=mask)
    return hf_flax.ACT2FN[self.config.feat_extract_activation](features).astype(self.dtype)


class _PlainConvLayer(nn.Module):
  """Conv and activation (the layers after the first in the group-norm layout)."""
  config: Wav2Vec2Config  # the model's configuration
  layer_id: int = 0  # index of the conv layer
  dtype: Dtype = jnp.float32  # compute dtype

  @nn.compact
  def __call__(self, features: jax.Array) -> jax.Array:  # [B, T, Cin] -> [B, T', Cout]
    features = nn.Conv(
        self.config.conv_dim[self.layer_id], (self.config.conv_kernel[self.layer_id],),
        strides=(self.config.conv_stride[self.layer_id],), padding="VALID",
        use_bias=self.config.conv_bias, dtype=self.dtype, name="conv")(features)
    return hf_flax.ACT2FN[self.config.feat_extract_activation](features)


class _ConvLayers(nn.Module):
  """The conv stack: layers named "0", "1", ... as in the PyTorch checkpoint."""
  config: Wav2Vec2Config  # the model's configuration
  dtype: Dtype = jnp.float32  # compute dtype

  @nn.compact
  def __call__(self, waveform: jax.Array, num_valid_samples: Optional[jax.Array]):
    # waveform [B, S], num_valid_samples [B] or None -> ([B, F, C], valid frames [B] or None)
    features = waveform[:, :, None].astype(self.dtype)  # [B, S, 1]
    num_valid = num_valid_samples
    for layer_id, (kernel, stride) in enumerate(zip(self.config.conv_kernel,
                                                    self.config.conv_stride)):
      if num_valid is not None:
        num_valid = (num_valid - kernel) // stride + 1
      name = str(layer_id)
      if self.config.feat_extract_norm == "layer":
        features = hf_flax.FlaxWav2Vec2LayerNormConvLayer(
            self.config, layer_id=layer_id, dtype=self.dtype, name=name)(features)
      elif layer_id == 0:
        features = _GroupNormConvLayer(self.config, layer_id, self.dtype, name=name)(
            features, num_valid)
      else:
        features = _PlainConvLayer(self.config, layer_id, self.dtype, name=name)(features)
    return features, num_valid


class _FeatureEncoder(nn.Module):
  """The conv feature encoder of raw audio (PyTorch `Wav2Vec2FeatureEncoder`)."""
  config: Wav2Vec2Config  # the model's configuration
  dtype: Dtype = jnp.float32  # compute dtype

  @nn.compact
  def __call__(self, waveform: jax.Array, num_valid_samples: Optional[jax.Array]):
    # waveform [B, S], num_valid_samples [B] or None -> ([B, F, C], valid frames [B] or None)
    return _ConvLayers(self.config, self.dtype, name="conv_layers")(waveform, num_valid_samples)


class _PostNormEncoderLayer(nn.Module):
  """Encoder layer of the original layout: attention and feed-forward each followed by a norm."""
  config: Wav2Vec2Config  # the model's configuration
  dtype: Dtype = jnp.float32  # compute dtype

  @nn.compact
  def __call__(self, hidden: jax.Array, frame_mask: Optional[jax.Array]) -> jax.Array:
    # hidden [B, F, H], frame_mask [B, F] or None -> [B, F, H]
    config = self.config
    attended, _ = hf_flax.FlaxWav2Vec2Attention(
        config=config, embed_dim=config.hidden_size, num_heads=config.num_attention_heads,
        dropout=config.attention_dropout, dtype=self.dtype, name="attention")(
            hidden, attention_mask=frame_mask)
    hidden = nn.LayerNorm(epsilon=config.layer_norm_eps, dtype=self.dtype,
                          name="layer_norm")(hidden + attended)
    hidden = hidden + hf_flax.FlaxWav2Vec2FeedForward(config, dtype=self.dtype,
                                                      name="feed_forward")(hidden)
    return nn.LayerNorm(epsilon=config.layer_norm_eps, dtype=self.dtype,
                        name="final_layer_norm")(hidden)


class _PostNormEncoderLayers(nn.Module):
  """The encoder layers of the original layout, named "0", "1", ..."""
  config: Wav2Vec2Config  # the model's configuration
  dtype: Dtype = jnp.float32  # compute dtype

  @nn.compact
  def __call__(self, hidden: jax.Array, frame_mask: Optional[jax.Array]) -> list[jax.Array]:
    # hidden [B, F, H] -> L + 1 hidden states [B, F, H]: the input, then each layer's output
    states = [hidden]
    for layer_id in range(self.config.num_hidden_layers):
      hidden = _PostNormEncoderLayer(self.config, self.dtype, name=str(layer_id))(
          hidden, frame_mask)
      states.append(hidden)
    return states


class _PostNormEncoder(nn.Module):
  """Encoder of the original layout (PyTorch `Wav2Vec2Encoder`): the layer norm comes first."""
  config: Wav2Vec2Config  # the model's configuration
  dtype: Dtype = jnp.float32  # compute dtype

  @nn.compact
  def __call__(self, hidden: jax.Array, frame_mask: Optional[jax.Array]) -> list[jax.Array]:
    # hidden [B, F, H], frame_mask [B, F] or None -> L + 1 hidden states [B, F, H]
    if frame_mask is not None:
      hidden = jnp.where(frame_mask[:, :, None], hidden, 0)
    hidden = hidden + hf_flax.FlaxWav2Vec2PositionalConvEmbedding(
        self.config, dtype=self.dtype, name="pos_conv_embed")(hidden)
    hidden = nn.LayerNorm(epsilon=self.config.layer_norm_eps, dtype=self.dtype,
                          name="layer_norm")(hidden)
    return _PostNormEncoderLayers(self.config, self.dtype, name="layers")(hidden, frame_mask)


class Wav2Vec2Model(nn.Module):
  """The Wav2Vec2 base model (no task head) in either layer-norm layout; see the module docstring.

  Inference only: dropout, SpecAugment masking and LayerDrop are left out.
  """
  config: Wav2Vec2Config  # the checkpoint's configuration (`check_config` must accept it)
  dtype: Dtype = jnp.float32  # compute dtype (parameters stay float32)

  @nn.compact
  def __call__(self, waveform: jax.Array,
               num_valid_samples: Optional[jax.Array] = None) -> jax.Array:
    """All hidden states of a batch of (possibly zero-padded) 16 kHz waveforms.

    Args:
      waveform: [B, S] float, normalised as the checkpoint expects (`normalize_waveform`).
      num_valid_samples: [B] int, the leading samples of each row that are audio (the rest is
        padding); None when every sample is.

    Returns:
      [L + 1, B, F, H] with F = conv_output_length(config, S): the embedding output, then each
      encoder layer's output. Frames at or after conv_output_length(config, num_valid_samples)
      come from padding; the others do not depend on it.
    """
    features, num_valid_frames = _FeatureEncoder(self.config, self.dtype,
                                                 name="feature_extractor")(
                                                     waveform, num_valid_samples)
    hidden, _ = hf_flax.FlaxWav2Vec2FeatureProjection(self.config, dtype=self.dtype,
                                                      name="feature_projection")(features)
    frame_mask = _frame_mask(hidden.shape[1], num_valid_frames)  # [B, F] or None
    if self.config.do_stable_layer_norm:
      _, states = hf_flax.FlaxWav2Vec2StableLayerNormEncoder(
          self.config, dtype=self.dtype, name="encoder")(
              hidden, attention_mask=frame_mask, output_hidden_states=True, return_dict=False)
    else:
      states = _PostNormEncoder(self.config, self.dtype, name="encoder")(hidden, frame_mask)
    return jnp.stack(states)


class LayerWeightedSum(nn.Module):
  """Learned convex combination of the stacked hidden states of Wav2Vec2's layers.

  The weights are a softmax over one learned logit per layer (initialised equal: the mean of the
  layers), computed in float32.
  """

  @nn.compact
  def __call__(self, hidden_states: jax.Array) -> jax.Array:
    # hidden_states [..., L + 1, T, H] -> [..., T, H] float32
    logits = self.param("layer_logits", nn.with_logical_partitioning(nn.initializers.zeros_init(),
                                                                     (None,)),
                        (hidden_states.shape[-3],), jnp.float32)
    weights = jax.nn.softmax(logits)  # [L + 1]
    return jnp.einsum("l,...lth->...th", weights, hidden_states.astype(jnp.float32))


@dataclasses.dataclass(frozen=True)
class Wav2Vec2Bundle:
  """A Wav2Vec2 ready to run: module, parameters and the jitted forward."""
  config: Wav2Vec2Config  # the model directory's config.json
  module: Wav2Vec2Model  # the Flax model
  params: Any  # its float32 parameters (nested dicts of arrays, PyTorch module names)
  normalize: bool  # whether waveforms are normalised to zero mean and unit variance first
  # jax.jit of (params, waveform [B, S], num_valid_samples [B] int32) -> [L + 1, B, F, H];
  # it compiles once per (B, S).
  forward: Callable[[Any, jax.Array, jax.Array], jax.Array]


def wav2vec2_bundle(config: Wav2Vec2Config, params: Any, normalize: bool = True,
                    dtype: Dtype = jnp.float32) -> Wav2Vec2Bundle:
  """A bundle of the given configuration and parameters, with a newly jitted forward."""
  check_config(config)
  module = Wav2Vec2Model(config, dtype=dtype)

  @jax.jit
  def forward(params: Any, waveform: jax.Array, num_valid_samples: jax.Array) -> jax.Array:
    return module.apply({"params": params}, waveform, num_valid_samples)

  return Wav2Vec2Bundle(config=config, module=module, params=jax.device_put(params),
                        normalize=normalize, forward=forward)


def param_shapes(config: Wav2Vec2Config) -> dict[tuple[str, ...], tuple[int, ...]]:
  """Flax parameter path -> shape of every parameter of `Wav2Vec2Model(config)`."""
  check_config(config)
  waveform = jax.ShapeDtypeStruct((1, receptive_field(config)), jnp.float32)
  abstract = jax.eval_shape(Wav2Vec2Model(config).init, jax.random.key(0), waveform)
  flat = flax.traverse_util.flatten_dict(abstract["params"])
  return {path: tuple(leaf.shape) for path, leaf in flat.items()}


def _torch_names(path: tuple[str, ...]) -> tuple[str, ...]:
  """("encoder", "layers", "0", "layer_norm", "scale") -> ("encoder.layers.0.layer_norm.weight",).

  Weight-norm parameters have two candidate names (see `_TORCH_LEAF_NAMES`).
  """
  module = ".".join(path[:-1])
  return tuple(f"{module}.{leaf}" for leaf in _TORCH_LEAF_NAMES[path[-1]])


def _torch_layout_shape(shape: tuple[int, ...], leaf_name: str) -> tuple[int, ...]:
  """The PyTorch shape of a Flax parameter: conv kernels [K, in, out] and dense [in, out] flip."""
  return shape[::-1] if leaf_name == "kernel" else shape


def _from_torch_layout(tensor: np.ndarray, leaf_name: str) -> np.ndarray:
  """Conv weights [out, in, K] -> [K, in, out] and dense [out, in] -> [in, out]."""
  return np.transpose(tensor) if leaf_name == "kernel" else tensor


def _raise_problems(problems: list[str], source: str) -> None:
  if problems:
    listed = "; ".join(problems[:_MAX_LISTED_PROBLEMS])
    more = len(problems) - _MAX_LISTED_PROBLEMS
    raise ValueError(
        f"{source} does not hold the weights of this Wav2Vec2 configuration "
        f"({len(problems)} problem(s)): {listed}{f'; and {more} more' if more > 0 else ''}. "
        "Do config.json and the weights come from the same model?")


def params_from_torch(tensors: Mapping[str, Any], config: Wav2Vec2Config,
                      source: str = "the state_dict") -> dict[str, Any]:
  """Flax parameters of `Wav2Vec2Model(config)` from a PyTorch `Wav2Vec2Model` state_dict.

  Args:
    tensors: state_dict name -> array-like in PyTorch layout. A "wav2vec2." prefix (task-model
      checkpoints) is stripped; tensors the base model does not use (`lm_head.*`,
      `masked_spec_embed`, ...) are ignored.
    config: the checkpoint's configuration.
    source: where the tensors come from (a path), for error messages.

  Returns:
    Nested dicts of float32 numpy arrays, the structure `Wav2Vec2Model(config).init` gives.

  Raises:
    ValueError: a needed tensor is missing or has another shape; the message names each such
      tensor with its shape in the file and the shape the model needs.
  """
  prefix = _BASE_MODEL_PREFIX + "."
  tensors = {name.removeprefix(prefix): tensor for name, tensor in tensors.items()}
  params, problems = {}, []
  for path, shape in param_shapes(config).items():
    torch_shape = _torch_layout_shape(shape, path[-1])
    names = _torch_names(path)
    found = [name for name in names if name in tensors]
    if not found:
      problems.append(f"tensor {names[0]!r} is missing (the model needs shape {torch_shape})")
      continue
    tensor = np.asarray(tensors[found[0]])
    if tensor.shape != torch_shape:
      problems.append(f"tensor {found[0]!r} has shape {tensor.shape} in the file but the model "
                      f"needs {torch_shape}")
      continue
    params[path] = np.ascontiguousarray(_from_torch_layout(tensor, path[-1]), dtype=np.float32)
  _raise_problems(problems, source)
  return flax.traverse_util.unflatten_dict(params)


def params_from_flax(tree: Mapping[str, Any], config: Wav2Vec2Config,
                     source: str = "the parameters") -> dict[str, Any]:
  """Flax parameters of `Wav2Vec2Model(config)` from a transformers Flax checkpoint's tree.

  A top-level "wav2vec2" entry (task-model checkpoints) is descended into; parameters the base
  model does not use are ignored. Raises ValueError naming each missing or mis-shaped parameter.
  """
  if _BASE_MODEL_PREFIX in tree:
    tree = tree[_BASE_MODEL_PREFIX]
  flat = flax.traverse_util.flatten_dict(tree)
  params, problems = {}, []
  for path, shape in param_shapes(config).items():
    name = "/".join(path)
    if path not in flat:
      problems.append(f"parameter {name!r} is missing (the model needs shape {shape})")
      continue
    value = np.asarray(flat[path])
    if value.shape != shape:
      problems.append(f"parameter {name!r} has shape {value.shape} in the file but the model "
                      f"needs {shape}")
      continue
    params[path] = value.astype(np.float32)
  _raise_problems(problems, source)
  return flax.traverse_util.unflatten_dict(params)


def _read_torch_tensors(path: str) -> dict[str, np.ndarray]:
  """The floating point tensors of a `model.safetensors` or `pytorch_model.bin`, as numpy."""
  if path.endswith(".safetensors"):
    from safetensors.numpy import load_file  # pylint: disable=g-import-not-at-top
    try:
      return load_file(path)
    except Exception as e:  # safetensors raises several types for a corrupt file
      raise ValueError(f"{path} is not a readable safetensors file: {e}") from e
  try:
    import torch  # pylint: disable=g-import-not-at-top  (only .bin checkpoints need it)
  except ImportError as e:
    raise ImportError(f"reading {path} needs torch; install it or convert the checkpoint to "
                      "model.safetensors") from e
  try:
    state_dict = torch.load(path, map_location="cpu", weights_only=True)
  except Exception as e:  # torch raises many types for a file that is not a checkpoint
    raise ValueError(f"{path} is not a weights-only PyTorch checkpoint: {e}") from e
  return {name: tensor.detach().to(torch.float32).numpy()
          for name, tensor in state_dict.items()
          if isinstance(tensor, torch.Tensor) and tensor.is_floating_point()}


def _read_normalize(model_dir: str) -> bool:
  """preprocessor_config.json's `do_normalize`, or Wav2Vec2FeatureExtractor's default True."""
  path = os.path.join(model_dir, PREPROCESSOR_CONFIG_FILE)
  if not os.path.isfile(path):
    return True
  with open(path, encoding="utf-8") as f:
    return bool(json.load(f).get("do_normalize", True))


def load_wav2vec2(model_dir: str, dtype: Dtype = jnp.float32) -> Wav2Vec2Bundle:
  """The Wav2Vec2 base model of a local Hugging Face model directory.

  Args:
    model_dir: a directory as `save_pretrained` writes it: config.json and one of
      model.safetensors, pytorch_model.bin (needs torch) or flax_model.msgpack, tried in that
      order; an optional preprocessor_config.json sets the waveform normalisation. The
      checkpoint may be of Wav2Vec2Model or of a task model (ForCTC, ForPreTraining): only the
      base model is loaded.
    dtype: compute dtype of the forward (parameters are float32).

  Returns:
    The bundle; its `forward` compiles on first use.

  Raises:
    FileNotFoundError: the directory, its config.json or a weight file is missing.
    ValueError: config.json is not a Wav2Vec2 configuration this module runs, or the weights
      lack a tensor or hold one of another shape (named in the message).
  """
  if not os.path.isdir(model_dir):
    raise FileNotFoundError(f"Wav2Vec2 model directory {model_dir!r} does not exist")
  config_path = os.path.join(model_dir, CONFIG_FILE)
  if not os.path.isfile(config_path):
    raise FileNotFoundError(f"{model_dir!r} has no {CONFIG_FILE}; is it a Hugging Face model "
                            "directory?")
  with open(config_path, encoding="utf-8") as f:
    model_type = json.load(f).get("model_type", "wav2vec2")
  if model_type != "wav2vec2":
    raise ValueError(f"{config_path} is the configuration of a {model_type!r} model, not wav2vec2")
  config = Wav2Vec2Config.from_json_file(config_path)
  check_config(config)
  weight_paths = [os.path.join(model_dir, name) for name in WEIGHT_FILES]
  existing = [path for path in weight_paths if os.path.isfile(path)]
  if not existing:
    raise FileNotFoundError(f"{model_dir!r} holds none of the weight files {WEIGHT_FILES} "
                            "(sharded checkpoints are not supported)")
  weights_path = existing[0]
  if weights_path.endswith(".msgpack"):
    with open(weights_path, "rb") as f:
      try:
        tree = flax.serialization.msgpack_restore(f.read())
      except Exception as e:  # msgpack raises several types for a corrupt file
        raise ValueError(f"{weights_path} is not a Flax msgpack checkpoint: {e}") from e
    params = params_from_flax(tree, config, weights_path)
  else:
    params = params_from_torch(_read_torch_tensors(weights_path), config, weights_path)
  return wav2vec2_bundle(config, params, normalize=_read_normalize(model_dir), dtype=dtype)


def load_audio(path: str, start_time: float = 0.0) -> np.ndarray:
  """A media file's first audio stream as float32 mono 16 kHz samples ([N], N > 0).

  Args:
    path: any container/codec PyAV reads, any sample rate and channel layout.
    start_time: container clock time of sample 0 (`media.VideoClip.start_time` aligns the audio
      with the frames of the same file).

  Raises:
    media.NoAudioError: the file has no audio stream or it holds no samples (zero-length audio).
    media.MediaError: the file is missing, undecodable or truncated.
  """
  return media.read_audio(path, sample_rate=SAMPLE_RATE, start_time=start_time)


def normalize_waveform(waveform: np.ndarray) -> np.ndarray:
  """Zero mean, unit variance: (x - mean) / sqrt(var + 1e-7), as Wav2Vec2FeatureExtractor does."""
  waveform = np.asarray(waveform, np.float64)
  return ((waveform - waveform.mean()) / np.sqrt(waveform.var() + _NORMALIZE_EPSILON)).astype(
      np.float32)


def _check_waveform(waveform: np.ndarray, config: Wav2Vec2Config) -> np.ndarray:
  waveform = np.asarray(waveform)
  if waveform.ndim != 1 or not np.issubdtype(waveform.dtype, np.floating):
    raise ValueError(f"waveform must be 1-D float at 16 kHz, got {waveform.dtype} "
                     f"{waveform.shape}")
  if len(waveform) < receptive_field(config):
    raise ValueError(f"waveform of {len(waveform)} samples is shorter than one Wav2Vec2 frame "
                     f"({receptive_field(config)} samples)")
  if not np.all(np.isfinite(waveform)):
    raise ValueError("waveform holds NaN or infinite samples")
  return waveform.astype(np.float32)


def _chunk_samples(config: Wav2Vec2Config, chunk_seconds: float,
                   overlap_seconds: float) -> tuple[int, int, int]:
  """(chunk length, hop in samples, overlap in frames), lengths multiples of the frame stride."""
  stride = frame_stride(config)
  chunk = max(1, round(chunk_seconds * SAMPLE_RATE / stride)) * stride
  overlap = round(overlap_seconds * SAMPLE_RATE / stride) * stride
  overlap_frames = conv_output_length(config, chunk) - (chunk - overlap) // stride
  if 2 * overlap > chunk or overlap_frames < _MIN_OVERLAP_FRAMES:
    raise ValueError(
        f"chunks of {chunk_seconds} s overlapping by {overlap_seconds} s do not work: the overlap "
        f"must be at most half a chunk and share at least {_MIN_OVERLAP_FRAMES} Wav2Vec2 frames "
        f"(it shares {overlap_frames})")
  return chunk, chunk - overlap, overlap_frames


def _fade_in(overlap_frames: int) -> np.ndarray:
  """[O] weights of the later chunk in an overlap: 0 on the first quarter, 1 on the last."""
  position = (np.arange(overlap_frames) + 0.5) / overlap_frames
  return np.clip(2.0 * (position - 0.25), 0.0, 1.0).astype(np.float32)


def chunked_hidden_states(bundle: Wav2Vec2Bundle, waveform: np.ndarray,
                          layer: Optional[int] = None, chunk_seconds: float = 10.0,
                          overlap_seconds: Optional[float] = None) -> np.ndarray:
  """Wav2Vec2 hidden states of a recording at the model's own frame rate, computed in chunks.

  Args:
    bundle: the model.
    waveform: float [N] mono at 16 kHz, not normalised.
    layer: which hidden state (0 the embedding output, i the output of layer i, negative counts
      from the end); None for all of them.
    chunk_seconds: length of the chunks the model runs on (one compilation per length); a
      recording shorter than a chunk runs padded to a whole number of seconds instead.
    overlap_seconds: overlap of consecutive chunks, at most half a chunk; None for a fifth of a
      chunk.

  Returns:
    float32 [F, H] for a `layer`, [L + 1, F, H] for None, F = conv_output_length(config, N).
  """
  config = bundle.config
  waveform = _check_waveform(waveform, config)
  num_layers = config.num_hidden_layers + 1
  if layer is not None and not -num_layers <= layer < num_layers:
    raise ValueError(f"layer {layer} does not exist: the model has hidden states "
                     f"0..{num_layers - 1}")
  if bundle.normalize:
    waveform = normalize_waveform(waveform)
  num_samples = len(waveform)
  if overlap_seconds is None:
    overlap_seconds = chunk_seconds * _DEFAULT_OVERLAP_FRACTION
  chunk, hop, overlap_frames = _chunk_samples(config, chunk_seconds, overlap_seconds)
  num_chunks = 1 + max(0, math.ceil((num_samples - chunk) / hop))
  stride = frame_stride(config)
  fade_in = _fade_in(overlap_frames)
  layers_shape = () if layer is not None else (num_layers,)
  output = np.zeros(layers_shape + (conv_output_length(config, num_samples), config.hidden_size),
                    np.float32)
  # A recording shorter than a chunk runs padded to whole seconds only (streaming segments are
  # short): at most ceil(chunk_seconds) extra compilations instead of 10 s of padded compute.
  padded_length = chunk if num_chunks > 1 else min(
      chunk, max(1, math.ceil(num_samples / SAMPLE_RATE)) * SAMPLE_RATE)
  chunk_waveform = np.zeros([1, padded_length], np.float32)
  for index in range(num_chunks):
    start = index * hop
    num_valid = min(padded_length, num_samples - start)
    chunk_waveform[0, :num_valid] = waveform[start:start + num_valid]
    chunk_waveform[0, num_valid:] = 0.0
    states = bundle.forward(bundle.params, chunk_waveform, np.array([num_valid], np.int32))
    states = states[:, 0] if layer is None else states[layer, 0]  # [(L + 1,) F_chunk, H]
    num_frames = conv_output_length(config, num_valid)
    weights = np.ones([num_frames], np.float32)
    if index > 0:
      weights[:overlap_frames] = fade_in
    if index < num_chunks - 1:
      weights[num_frames - overlap_frames:] = 1.0 - fade_in
    first = start // stride
    output[..., first:first + num_frames, :] += (
        weights[:, None] * np.asarray(states)[..., :num_frames, :])
  return output


def to_video_rate(features: np.ndarray, config: Wav2Vec2Config, num_samples: int,
                  fps: float) -> np.ndarray:
  """Wav2Vec2-rate features [..., F, H] of `num_samples` samples -> [..., num_frames, H] at `fps`.

  Linear interpolation in time at video frame centres (see the module docstring);
  num_frames = num_video_frames(num_samples, fps).
  """
  if fps <= 0:
    raise ValueError(f"fps must be positive, got {fps}")
  num_features = features.shape[-2]
  frame_centres = (np.arange(num_video_frames(num_samples, fps)) + 0.5) * SAMPLE_RATE / fps
  positions = np.clip((frame_centres - receptive_field(config) / 2) / frame_stride(config),
                      0.0, num_features - 1)
  lower = np.floor(positions).astype(np.int64)
  upper = np.minimum(lower + 1, num_features - 1)
  fraction = (positions - lower).astype(np.float32)[:, None]  # [num_frames, 1]
  return (features[..., lower, :] * (1.0 - fraction) + features[..., upper, :] * fraction).astype(
      np.float32)


def audio_features(bundle: Wav2Vec2Bundle, waveform: np.ndarray, fps: float = 25.0,
                   layer: Optional[int] = None, chunk_seconds: float = 10.0,
                   overlap_seconds: Optional[float] = None) -> np.ndarray:
  """Wav2Vec2 features of a 16 kHz recording, one per video frame (see the module docstring).

  Args:
    bundle: the model (`load_wav2vec2`).
    waveform: float [N] mono at 16 kHz, not normalised (`load_audio`).
    fps: the video frame rate.
    layer: which hidden state (0 the embedding output, i the output of layer i, negative counts
      from the end); None for all of them, to be combined by `LayerWeightedSum`.
    chunk_seconds: length of the chunks the model runs on (one compilation per length).
    overlap_seconds: overlap of consecutive chunks, at most half a chunk; None for a fifth of a
      chunk.

  Returns:
    float32 [num_frames, H] for a `layer`, [L + 1, num_frames, H] for None, with
    num_frames = num_video_frames(N, fps).
  """
  if fps <= 0:
    raise ValueError(f"fps must be positive, got {fps}")
  states = chunked_hidden_states(bundle, waveform, layer, chunk_seconds, overlap_seconds)
  return to_video_rate(states, bundle.config, len(waveform), fps)
