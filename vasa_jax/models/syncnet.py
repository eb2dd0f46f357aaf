"""SyncNet, the audio-visual sync network of joonson/syncnet_python (`SyncNetModel.S`), in Flax.

Two branches map a 0.2 s window of speech and the 5 video frames it spans to 1024-d embeddings; the
Euclidean distance between them is small where lips and sound are in sync
(`vasa_jax.evaluators.syncnet` turns it into the field's LSE-C / LSE-D, a.k.a. Sc / SD).

  audio branch (`netcnnaud`, `netfcaud`): MFCC window [B, 13, 20, 1] (13 coefficients x 20 steps
    of 10 ms), 2D convs 64-192-384-256-256-512 with BatchNorm + ReLU and max pools, then
    Linear 512 -> BatchNorm -> ReLU -> Linear 1024;
  lip branch (`netcnnlip`, `netfclip`): 5 frames [B, 5, 224, 224, 3] of BGR face crops with values
    0-255 (no normalisation, as the reference feeds cv2's frames), 3D convs 96-256-256-256-256-512
    (the first spans all 5 frames) with BatchNorm + ReLU and max pools, then the same MLP head.

Submodules are named after the reference's `nn.Sequential` indices (`netcnnaud_0` is
`netcnnaud.0`, its BatchNorm `netcnnaud_1`, ...), so the released `syncnet_v2.model` state dict maps
one to one (`vasa_jax.models.pretrained.load_syncnet`). Every BatchNorm runs on its running
statistics (PyTorch's eps 1e-5) unless `train` is set (`vasa_jax.trainers.syncnet`). `width` scales every hidden channel count (1.0 is the released
network; the SynthTalk-trained CPU variant of `configs/syncnet.py` uses less); the embedding size
stays `embedding_size`.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = Any

# Window sizes the network is built for.
MFCC_COEFFICIENTS = 13
MFCC_STEPS = 20  # 20 MFCC frames of 10 ms = 5 video frames at 25 fps
LIP_FRAMES = 5
LIP_SIZE = 224
EMBEDDING_SIZE = 1024
BATCH_NORM_EPSILON = 1e-5
# Running-statistics update in training: PyTorch's default (momentum 0.1 there = 0.9 here).
BATCH_NORM_MOMENTUM = 0.9

# (Sequential index of the conv, output channels, kernel, stride, padding) of each conv, and the
# max pools as ("pool", index, window, stride, padding); a BatchNorm and ReLU follow every conv.
_AUDIO_LAYERS = (
    ("conv", 0, 64, (3, 3), (1, 1), (1, 1)),
    ("conv", 4, 192, (3, 3), (1, 1), (1, 1)),
    ("pool", 7, (3, 3), (1, 2), (0, 0)),
    ("conv", 8, 384, (3, 3), (1, 1), (1, 1)),
    ("conv", 11, 256, (3, 3), (1, 1), (1, 1)),
    ("conv", 14, 256, (3, 3), (1, 1), (1, 1)),
    ("pool", 17, (3, 3), (2, 2), (0, 0)),
    ("conv", 18, 512, (5, 4), (1, 1), (0, 0)),
)  # the reference's 1x1 max pool (index 3) is the identity and is left out
_LIP_LAYERS = (
    ("conv", 0, 96, (5, 7, 7), (1, 2, 2), (0, 0, 0)),
    ("pool", 3, (1, 3, 3), (1, 2, 2), (0, 0, 0)),
    ("conv", 4, 256, (1, 5, 5), (1, 2, 2), (0, 1, 1)),
    ("pool", 7, (1, 3, 3), (1, 2, 2), (0, 1, 1)),
    ("conv", 8, 256, (1, 3, 3), (1, 1, 1), (0, 1, 1)),
    ("conv", 11, 256, (1, 3, 3), (1, 1, 1), (0, 1, 1)),
    ("conv", 14, 256, (1, 3, 3), (1, 1, 1), (0, 1, 1)),
    ("pool", 17, (1, 3, 3), (1, 2, 2), (0, 0, 0)),
    ("conv", 18, 512, (1, 6, 6), (1, 1, 1), (0, 0, 0)),
)
_HIDDEN_FEATURES = 512  # the MLP heads' hidden width (and the conv stacks' output channels)


def scaled_channels(channels: int, width: float) -> int:
  return max(1, round(channels * width))


class FrameSpanningConv(nn.Module):
  """A Conv3d whose kernel spans every input frame (one output frame), as the lip branch's convs
  are (5 frames into the first, 1 into the others): computed as a 2D conv over the frames'
  channels stacked frame-major, which XLA runs (and differentiates) several times faster on CPU
  than a 3D conv. The kernel keeps the 3D conv's shape [T, kh, kw, in, out] and initialisation."""
  features: int
  kernel_size: Sequence[int]  # (T, kh, kw)
  strides: Sequence[int]  # (1, sh, sw)
  padding: Sequence[int]  # (0, ph, pw)
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, inputs: jax.Array) -> jax.Array:  # [B, T, H, W, C] -> [B, 1, H', W', F]
    batch, frames, height, width, channels = inputs.shape
    kernel_frames, kernel_height, kernel_width = self.kernel_size
    if frames != kernel_frames or self.padding[0] or self.strides[0] != 1:
      raise ValueError(f"the kernel must span all {frames} input frames without temporal "
                       f"padding, got kernel {tuple(self.kernel_size)}, padding "
                       f"{tuple(self.padding)}")
    kernel = self.param("kernel", nn.initializers.lecun_normal(),
                        (kernel_frames, kernel_height, kernel_width, channels, self.features),
                        self.param_dtype)
    bias = self.param("bias", nn.initializers.zeros, (self.features,), self.param_dtype)
    stacked = jnp.transpose(inputs, (0, 2, 3, 1, 4)).reshape(
        batch, height, width, frames * channels)  # [B, H, W, T * C]
    kernel_2d = jnp.transpose(kernel, (1, 2, 0, 3, 4)).reshape(
        kernel_height, kernel_width, frames * channels, self.features)
    outputs = jax.lax.conv_general_dilated(
        stacked.astype(self.dtype), kernel_2d.astype(self.dtype), tuple(self.strides[1:]),
        [(p, p) for p in self.padding[1:]], dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return (outputs + bias.astype(self.dtype))[:, None]  # [B, 1, H', W', F]


def _conv_stack(layers: Sequence[tuple], width: float, dtype: Dtype,
                param_dtype: Dtype) -> dict[int, nn.Module]:
  """The convs and BatchNorms of a conv stack, keyed by their index in the reference."""
  modules = {}
  for layer in layers:
    if layer[0] == "conv":
      _, index, channels, kernel, stride, padding = layer
      if len(kernel) == 3:  # the lip branch
        modules[index] = FrameSpanningConv(scaled_channels(channels, width), kernel, stride,
                                           padding, dtype=dtype, param_dtype=param_dtype)
      else:
        modules[index] = nn.Conv(scaled_channels(channels, width), kernel, strides=stride,
                                 padding=[(p, p) for p in padding], dtype=dtype,
                                 param_dtype=param_dtype)
      modules[index + 1] = nn.BatchNorm(momentum=BATCH_NORM_MOMENTUM, epsilon=BATCH_NORM_EPSILON,
                                        dtype=jnp.float32, param_dtype=param_dtype)
  return modules


def _run_conv_stack(modules: dict[int, nn.Module], layers: Sequence[tuple], inputs: jax.Array,
                    dtype: Dtype, train: bool) -> jax.Array:
  """Conv + BatchNorm + ReLU for each conv, max pools in between."""
  hidden = inputs
  for layer in layers:
    if layer[0] == "pool":
      _, _, window, stride, padding = layer
      # Padded entries never win (flax pads max pools with -inf, as torch does).
      hidden = nn.max_pool(hidden, window, stride, [(p, p) for p in padding])
    else:
      index = layer[1]
      hidden = modules[index + 1](modules[index](hidden), use_running_average=not train)
      hidden = nn.relu(hidden).astype(dtype)
  return hidden


def _head(width: float, embedding_size: int, dtype: Dtype,
          param_dtype: Dtype) -> dict[int, nn.Module]:
  """Linear (0) -> BatchNorm1d (1) -> ReLU -> Linear (3), keyed as in the reference."""
  return {
      0: nn.Dense(scaled_channels(_HIDDEN_FEATURES, width), dtype=dtype,
                  param_dtype=param_dtype),
      1: nn.BatchNorm(momentum=BATCH_NORM_MOMENTUM, epsilon=BATCH_NORM_EPSILON, dtype=jnp.float32,
                      param_dtype=param_dtype),
      3: nn.Dense(embedding_size, dtype=jnp.float32, param_dtype=param_dtype),
  }


def _run_head(modules: dict[int, nn.Module], features: jax.Array, dtype: Dtype,
              train: bool) -> jax.Array:
  hidden = modules[1](modules[0](features), use_running_average=not train)
  return modules[3](nn.relu(hidden).astype(dtype))


class SyncNet(nn.Module):
  """syncnet_python's `S`: `embed_audio` and `embed_lips`; `__call__` runs both (for init)."""
  embedding_size: int = EMBEDDING_SIZE
  width: float = 1.0  # hidden channel multiplier (1.0: the released network)
  dtype: Dtype = jnp.float32  # compute dtype
  param_dtype: Dtype = jnp.float32

  def setup(self):
    # Dicts keyed by the reference's Sequential indices: flax names their entries
    # `netcnnaud_0`, `netcnnaud_1`, ... (torch `netcnnaud.0`, `netcnnaud.1`, ...).
    width, dtype, param_dtype = self.width, self.dtype, self.param_dtype
    self.netcnnaud = _conv_stack(_AUDIO_LAYERS, width, dtype, param_dtype)
    self.netfcaud = _head(width, self.embedding_size, dtype, param_dtype)
    self.netcnnlip = _conv_stack(_LIP_LAYERS, width, dtype, param_dtype)
    self.netfclip = _head(width, self.embedding_size, dtype, param_dtype)

  def embed_audio(self, mfcc: jax.Array, train: bool = False) -> jax.Array:
    """mfcc [B, 13, 20] (coefficient x 10 ms step) -> float32 [B, embedding_size].

    `train`: BatchNorm on the batch's statistics, updating the running ones (apply with
    mutable=["batch_stats"]); otherwise on the running statistics (the frozen network).
    """
    hidden = _run_conv_stack(self.netcnnaud, _AUDIO_LAYERS, mfcc[..., None].astype(self.dtype),
                             self.dtype, train)  # [B, 1, 1, 512]
    return _run_head(self.netfcaud, hidden.reshape(hidden.shape[0], -1), self.dtype, train)

  def embed_lips(self, frames: jax.Array, train: bool = False) -> jax.Array:
    """frames [B, 5, 224, 224, 3] BGR, 0-255 -> float32 [B, embedding_size] (`train` as above)."""
    hidden = _run_conv_stack(self.netcnnlip, _LIP_LAYERS, frames.astype(self.dtype),
                             self.dtype, train)  # [B, 1, 1, 1, 512]
    return _run_head(self.netfclip, hidden.reshape(hidden.shape[0], -1), self.dtype, train)

  def __call__(self, mfcc: jax.Array, frames: jax.Array,
               train: bool = False) -> tuple[jax.Array, jax.Array]:
    return self.embed_audio(mfcc, train), self.embed_lips(frames, train)

  def example_inputs(self) -> tuple[jax.ShapeDtypeStruct, jax.ShapeDtypeStruct]:
    """Shapes `__call__` takes, for `jax.eval_shape(model.init, key, *inputs)`."""
    return (jax.ShapeDtypeStruct((1, MFCC_COEFFICIENTS, MFCC_STEPS), jnp.float32),
            jax.ShapeDtypeStruct((1, LIP_FRAMES, LIP_SIZE, LIP_SIZE, 3), jnp.float32))
