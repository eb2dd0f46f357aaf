"""IResNet, the ArcFace face-recognition backbone, laid out like insightface's `arcface_torch`.

The structure and submodule names follow `recognition/arcface_torch/backbones/iresnet.py`
(conv1, bn1, prelu, layer1..layer4 of IBasicBlocks with bn1/conv1/bn2/prelu/conv2/bn3 and a
downsample (1x1 conv, BN), then bn2, flatten, dropout, fc and the `features` BatchNorm1d), with
`layer3.4` written `layer3_4` and `downsample.0` written `downsample_0`, so the released weights map
one to one (`vasa_jax.models.pretrained.load_iresnet`). The network is used frozen: every BatchNorm runs
in inference mode on its running statistics (collection `batch_stats`) and dropout is off.

Besides the 512-d embedding (the VASA-1 identity loss) the call returns the four stages' feature
maps. MegaPortraits' face perceptual term uses VGGFace features; no VGGFace weights are loadable
here, so these ArcFace feature maps stand in for them (`vasa_jax.models.perceptual`).
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = Any

# Residual blocks per stage of insightface's released depths.
STAGE_BLOCKS = {
    18: (2, 2, 2, 2),
    34: (3, 4, 6, 3),
    50: (3, 4, 14, 3),
    100: (3, 13, 30, 3),
    200: (6, 26, 60, 6),
}
# Output channels of the four stages.
STAGE_FEATURES = (64, 128, 256, 512)
# Side of the aligned face crops ArcFace is trained on; the final feature map is 7x7.
INPUT_SIZE = 112
BATCH_NORM_EPSILON = 1e-5


def _conv(features: int, kernel_size: int, stride: int, dtype: Dtype, param_dtype: Dtype,
          name: str) -> nn.Conv:
  """Bias-free conv with torch's padding (kernel_size // 2 on every side)."""
  padding = kernel_size // 2
  return nn.Conv(
      features, (kernel_size, kernel_size), strides=(stride, stride),
      padding=((padding, padding), (padding, padding)), use_bias=False, dtype=dtype,
      param_dtype=param_dtype,
      kernel_init=nn.with_logical_partitioning(nn.initializers.lecun_normal(),
                                               (None, None, None, "channels")),
      name=name)


def _batch_norm(dtype: Dtype, param_dtype: Dtype, name: str) -> nn.BatchNorm:
  """Inference-mode BatchNorm (running statistics; normalisation computed in float32)."""
  return nn.BatchNorm(use_running_average=True, epsilon=BATCH_NORM_EPSILON, dtype=dtype,
                      param_dtype=param_dtype, name=name)


class PReLU(nn.Module):
  """torch.nn.PReLU(C): x if x >= 0 else slope[c] * x, one learnt slope per channel."""
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, features: jax.Array) -> jax.Array:  # [..., C] -> [..., C]
    slope = self.param("negative_slope", nn.initializers.constant(0.25), (features.shape[-1],),
                       self.param_dtype)  # [C]
    return jnp.where(features >= 0, features, slope.astype(features.dtype) * features)


class IBasicBlock(nn.Module):
  """Pre-norm residual block: BN, conv3x3, BN, PReLU, conv3x3 (strided), BN; plus the skip."""
  features: int  # output channels
  stride: int = 1  # stride of the second conv (and of the 1x1 downsample)
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, inputs: jax.Array) -> jax.Array:
    # inputs [B, H, W, Cin] -> [B, H / stride, W / stride, features]
    dtype, param_dtype = self.dtype, self.param_dtype
    hidden = _batch_norm(dtype, param_dtype, "bn1")(inputs)
    hidden = _conv(self.features, 3, 1, dtype, param_dtype, "conv1")(hidden)
    hidden = _batch_norm(dtype, param_dtype, "bn2")(hidden)
    hidden = PReLU(param_dtype, name="prelu")(hidden)
    hidden = _conv(self.features, 3, self.stride, dtype, param_dtype, "conv2")(hidden)
    hidden = _batch_norm(dtype, param_dtype, "bn3")(hidden)
    skip = inputs
    if self.stride != 1 or inputs.shape[-1] != self.features:
      skip = _conv(self.features, 1, self.stride, dtype, param_dtype, "downsample_0")(inputs)
      skip = _batch_norm(dtype, param_dtype, "downsample_1")(skip)
    return hidden + skip


class IResNet(nn.Module):
  """ArcFace IResNet: face images -> (embedding [B, num_features], stage feature maps).

  Call: images [B, H, W, 3] in [-1, 1], RGB, ideally ArcFace-aligned face crops. They are resized
  to 112x112 inside (arcface_torch's input normalisation (x / 255 - 0.5) / 0.5 is exactly the
  [-1, 1] range). Returns the embedding (float32, not L2-normalised) and the outputs of
  layer1..layer4: [B, 56, 56, 64], [B, 28, 28, 128], [B, 14, 14, 256], [B, 7, 7, 512].
  """
  stage_blocks: Sequence[int] = STAGE_BLOCKS[100]  # blocks in layer1..layer4
  num_features: int = 512  # embedding size
  dtype: Dtype = jnp.float32  # compute dtype
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, images: jax.Array) -> tuple[jax.Array, list[jax.Array]]:
    if len(self.stage_blocks) != len(STAGE_FEATURES):
      raise ValueError(f"IResNet has {len(STAGE_FEATURES)} stages, got stage_blocks "
                       f"{tuple(self.stage_blocks)}")
    dtype, param_dtype = self.dtype, self.param_dtype
    batch = images.shape[0]
    images = images.astype(jnp.float32)
    if images.shape[1:3] != (INPUT_SIZE, INPUT_SIZE):
      images = jax.image.resize(images, (batch, INPUT_SIZE, INPUT_SIZE, images.shape[-1]),
                                "linear", antialias=True)
    features = _conv(STAGE_FEATURES[0], 3, 1, dtype, param_dtype, "conv1")(
        images.astype(dtype))  # [B, 112, 112, 64]
    features = _batch_norm(dtype, param_dtype, "bn1")(features)
    features = PReLU(param_dtype, name="prelu")(features)
    stage_outputs = []
    for stage, (num_blocks, channels) in enumerate(zip(self.stage_blocks, STAGE_FEATURES), 1):
      for block in range(num_blocks):
        features = IBasicBlock(channels, stride=2 if block == 0 else 1, dtype=dtype,
                               param_dtype=param_dtype, name=f"layer{stage}_{block}")(features)
      stage_outputs.append(features)
    features = _batch_norm(dtype, param_dtype, "bn2")(features)  # [B, 7, 7, 512]
    # torch flattens [B, C, H, W] channel-major; the same order keeps fc's weight as released.
    flat = jnp.transpose(features, (0, 3, 1, 2)).reshape(batch, -1)  # [B, 512 * 7 * 7]
    embedding = nn.Dense(
        self.num_features, dtype=dtype, param_dtype=param_dtype,
        kernel_init=nn.with_logical_partitioning(nn.initializers.lecun_normal(),
                                                 (None, "channels")),
        name="fc")(flat)
    embedding = _batch_norm(jnp.float32, param_dtype, "features")(embedding)  # [B, 512]
    return embedding, stage_outputs


def iresnet(depth: int, **kwargs: Any) -> IResNet:
  """The IResNet of a released depth (18, 34, 50, 100 or 200); kwargs go to IResNet."""
  if depth not in STAGE_BLOCKS:
    raise ValueError(f"no IResNet of depth {depth}; known depths: {sorted(STAGE_BLOCKS)}")
  return IResNet(stage_blocks=STAGE_BLOCKS[depth], **kwargs)
