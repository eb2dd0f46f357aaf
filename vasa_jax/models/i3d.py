"""I3D, the Kinetics-400 Inflated Inception-v1 whose logits define FVD, in Flax.

The network is DeepMind's `InceptionI3d` (deepmind/kinetics-i3d `i3d.py`) as published on TF-Hub
(`i3d-kinetics-400/1`, the graph the FVD reference implementation of Unterthiner et al. loads),
of which StyleGAN-V's `i3d_torchscript.pt` is a numerically equivalent port. Structure, with
TensorFlow's SAME padding everywhere (asymmetric: the extra pixel goes after; max pools ignore the
padding) unless VALID is said:

  Conv3d_1a_7x7 (64, 7x7x7, stride 2) -> MaxPool3d_2a_3x3 (1x3x3, stride 1x2x2)
  -> Conv3d_2b_1x1 (64) -> Conv3d_2c_3x3 (192) -> MaxPool3d_3a_3x3 (1x3x3, stride 1x2x2)
  -> Mixed_3b, Mixed_3c -> MaxPool3d_4a_3x3 (3x3x3, stride 2)
  -> Mixed_4b .. Mixed_4f -> MaxPool3d_5a_2x2 (2x2x2, stride 2) -> Mixed_5b, Mixed_5c
  -> AvgPool (2x7x7, VALID) -> Logits/Conv3d_0c_1x1 (400, with bias, no BatchNorm or ReLU)
  -> squeeze space -> mean over the remaining time steps = the 400-d logits FVD uses.

Each Mixed block concatenates Branch_0 (1x1x1), Branch_1 (1x1x1 -> 3x3x3), Branch_2 (1x1x1 ->
3x3x3) and Branch_3 (3x3x3 max pool, stride 1 -> 1x1x1). Every other unit is conv -> BatchNorm
(eps 1e-3, running statistics) -> ReLU. Sonnet's BatchNorm has no scale and the TF convs no bias;
here every conv has a bias and every BatchNorm a scale (the converter writes zeros and ones where a
file has none), so ports that keep them load too.

Input: videos [B, T, H, W, 3], RGB, values 0-255 (T >= 9: the pools reduce 9 frames to the 2 the
final average pool needs). Frames are resized to 224 x 224 (bilinear, half-pixel centres, no
anti-aliasing, as StyleGAN-V's port resizes; the TF reference used `tf.image.resize_bilinear`)
and scaled to [-1, 1] as 2 x / 255 - 1. Variables are named after the TF graph
(`Mixed_4b/Branch_1/Conv3d_0b_3x3/conv_3d`); `vasa_jax.models.pretrained.load_i3d` reads the
converter's file (`python -m data_prep.convert_weights --kind=i3d`).
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = Any

INPUT_SIZE = 224
NUM_CLASSES = 400
MIN_FRAMES = 9
BATCH_NORM_EPSILON = 1e-3

# Output channels of the Mixed blocks: Branch_0, Branch_1 (1x1, 3x3), Branch_2 (1x1, 3x3),
# Branch_3 (after the pool).
MIXED_CHANNELS = {
    "Mixed_3b": (64, 96, 128, 16, 32, 32),
    "Mixed_3c": (128, 128, 192, 32, 96, 64),
    "Mixed_4b": (192, 96, 208, 16, 48, 64),
    "Mixed_4c": (160, 112, 224, 24, 64, 64),
    "Mixed_4d": (128, 128, 256, 24, 64, 64),
    "Mixed_4e": (112, 144, 288, 32, 64, 64),
    "Mixed_4f": (256, 160, 320, 32, 128, 128),
    "Mixed_5b": (256, 160, 320, 32, 128, 128),
    "Mixed_5c": (384, 192, 384, 48, 128, 128),
}
# The network in order: ("unit", path, channels, kernel, stride), ("pool", window, stride),
# ("mixed", name). Paths join module names with "/".
_STEM = (
    ("unit", "Conv3d_1a_7x7", 64, (7, 7, 7), (2, 2, 2)),
    ("pool", (1, 3, 3), (1, 2, 2)),
    ("unit", "Conv3d_2b_1x1", 64, (1, 1, 1), (1, 1, 1)),
    ("unit", "Conv3d_2c_3x3", 192, (3, 3, 3), (1, 1, 1)),
    ("pool", (1, 3, 3), (1, 2, 2)),
    ("mixed", "Mixed_3b"), ("mixed", "Mixed_3c"),
    ("pool", (3, 3, 3), (2, 2, 2)),
    ("mixed", "Mixed_4b"), ("mixed", "Mixed_4c"), ("mixed", "Mixed_4d"), ("mixed", "Mixed_4e"),
    ("mixed", "Mixed_4f"),
    ("pool", (2, 2, 2), (2, 2, 2)),
    ("mixed", "Mixed_5b"), ("mixed", "Mixed_5c"),
)
LOGITS_PATH = "Logits/Conv3d_0c_1x1"


def scaled_channels(channels: int, width: float) -> int:
  return max(1, round(channels * width))


def mixed_units(name: str, width: float = 1.0) -> list[tuple[str, int, tuple[int, ...]]]:
  """(path, channels, kernel) of a Mixed block's convs, in the TF graph's order."""
  b0, b1a, b1b, b2a, b2b, b3 = (scaled_channels(c, width) for c in MIXED_CHANNELS[name])
  return [(f"{name}/Branch_0/Conv3d_0a_1x1", b0, (1, 1, 1)),
          (f"{name}/Branch_1/Conv3d_0a_1x1", b1a, (1, 1, 1)),
          (f"{name}/Branch_1/Conv3d_0b_3x3", b1b, (3, 3, 3)),
          (f"{name}/Branch_2/Conv3d_0a_1x1", b2a, (1, 1, 1)),
          (f"{name}/Branch_2/Conv3d_0b_3x3", b2b, (3, 3, 3)),
          (f"{name}/Branch_3/Conv3d_0b_1x1", b3, (1, 1, 1))]


def unit_order(width: float = 1.0, num_classes: int = NUM_CLASSES
               ) -> list[tuple[str, int, tuple[int, ...], bool]]:
  """Every conv of the network in forward order: (path, channels, kernel, has BatchNorm)."""
  units = []
  for step in _STEM:
    if step[0] == "unit":
      units.append((step[1], scaled_channels(step[2], width), step[3], True))
    elif step[0] == "mixed":
      units += [(path, channels, kernel, True) for path, channels, kernel in
                mixed_units(step[1], width)]
  return units + [(LOGITS_PATH, num_classes, (1, 1, 1), False)]


class Unit3D(nn.Module):
  """conv_3d (SAME) -> batch_norm -> ReLU, or the bare conv for the logits."""
  features: int
  kernel: Sequence[int]
  strides: Sequence[int] = (1, 1, 1)
  batch_norm_and_relu: bool = True
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, inputs: jax.Array) -> jax.Array:  # [B, T, H, W, C] -> [B, T', H', W', F]
    hidden = nn.Conv(self.features, tuple(self.kernel), strides=tuple(self.strides),
                     padding="SAME", dtype=self.dtype, param_dtype=self.param_dtype,
                     name="conv_3d")(inputs)  # lax's SAME pads as TensorFlow's
    if not self.batch_norm_and_relu:
      return hidden
    hidden = nn.BatchNorm(use_running_average=True, epsilon=BATCH_NORM_EPSILON,
                          dtype=jnp.float32, param_dtype=self.param_dtype,
                          name="batch_norm")(hidden)
    return nn.relu(hidden).astype(self.dtype)


def _max_pool_same(inputs: jax.Array, window: Sequence[int],
                   strides: Sequence[int]) -> jax.Array:
  """TensorFlow's SAME max pool (flax pads with -inf, so padding never wins)."""
  return nn.max_pool(inputs, tuple(window), tuple(strides), padding="SAME")


class I3D(nn.Module):
  """Videos [B, T, H, W, 3] RGB 0-255 -> float32 [B, num_classes] time-averaged logits."""
  width: float = 1.0  # channel multiplier (1.0: the released network)
  num_classes: int = NUM_CLASSES
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  # Names are the TF graph's ("Branch_0" is not a PyTorch list entry).
  KEEPS_TORCH_NAMES = True

  def _unit(self, path: str, channels: int, kernel: Sequence[int],
            strides: Sequence[int] = (1, 1, 1), batch_norm_and_relu: bool = True) -> Unit3D:
    return Unit3D(channels, kernel, strides, batch_norm_and_relu, dtype=self.dtype,
                  param_dtype=self.param_dtype, name=path.replace("/", "."))

  @nn.compact
  def __call__(self, videos: jax.Array) -> jax.Array:
    batch, frames = videos.shape[:2]
    if frames < MIN_FRAMES:
      raise ValueError(f"I3D needs at least {MIN_FRAMES} frames, got {frames}")
    x = videos.astype(jnp.float32)
    if x.shape[2:4] != (INPUT_SIZE, INPUT_SIZE):
      x = jax.image.resize(x, (batch, frames, INPUT_SIZE, INPUT_SIZE, x.shape[-1]), "linear",
                           antialias=False)
    x = (2.0 * x / 255.0 - 1.0).astype(self.dtype)
    for step in _STEM:
      if step[0] == "unit":
        _, path, channels, kernel, strides = step
        x = self._unit(path, scaled_channels(channels, self.width), kernel, strides)(x)
      elif step[0] == "pool":
        x = _max_pool_same(x, step[1], step[2])
      else:
        x = self._mixed(step[1], x)
    x = nn.avg_pool(x, (2, 7, 7), (1, 1, 1), padding="VALID")  # [B, T'', 1, 1, 1024]
    logits = self._unit(LOGITS_PATH, self.num_classes, (1, 1, 1),
                        batch_norm_and_relu=False)(x)  # [B, T'', 1, 1, classes]
    return jnp.mean(logits.astype(jnp.float32), axis=(1, 2, 3))  # [B, classes]

  def _mixed(self, name: str, x: jax.Array) -> jax.Array:
    units = {path.split("/")[1] + "/" + path.split("/")[2]: (path, channels, kernel)
             for path, channels, kernel in mixed_units(name, self.width)}
    branch_0 = self._unit(*units["Branch_0/Conv3d_0a_1x1"])(x)
    branch_1 = self._unit(*units["Branch_1/Conv3d_0b_3x3"])(
        self._unit(*units["Branch_1/Conv3d_0a_1x1"])(x))
    branch_2 = self._unit(*units["Branch_2/Conv3d_0b_3x3"])(
        self._unit(*units["Branch_2/Conv3d_0a_1x1"])(x))
    branch_3 = self._unit(*units["Branch_3/Conv3d_0b_1x1"])(
        _max_pool_same(x, (3, 3, 3), (1, 1, 1)))
    return jnp.concatenate([branch_0, branch_1, branch_2, branch_3], axis=-1)

  def example_inputs(self) -> tuple[jax.ShapeDtypeStruct]:
    return (jax.ShapeDtypeStruct((1, MIN_FRAMES, INPUT_SIZE, INPUT_SIZE, 3), jnp.float32),)
