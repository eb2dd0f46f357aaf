"""VGG19 feature extractor for the perceptual loss, laid out like torchvision's `vgg19().features`.

The network is torchvision's `features` stack (16 3x3 convs with ReLU, 5 max pools; no classifier).
Each conv is named `features_{i}` after its index `i` in that `nn.Sequential`, so the ImageNet
weights map one to one (`vasa_jax.models.pretrained.load_vgg19`); `VGG19_LAYER_NAMES[i]` names the
output of index `i` the usual way ("conv1_1", "relu1_1", ..., "pool5").

Only the layers up to the deepest requested one are built and run. The network is used frozen
(the trainer does not update it); it takes images in [-1, 1] and applies ImageNet normalisation
itself.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = Any

# torchvision's VGG19 ("E") configuration: output channels of each 3x3 conv, "M" for a 2x2 max pool.
_VGG19_CONFIG = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M",
                 512, 512, 512, 512, "M", 512, 512, 512, 512, "M")


def _layer_names(config: Sequence[int | str]) -> tuple[str, ...]:
  """Names of the outputs of torchvision's `features`, by index (a ReLU follows each conv)."""
  names = []
  block, conv_in_block = 1, 0
  for entry in config:
    if entry == "M":
      names.append(f"pool{block}")
      block, conv_in_block = block + 1, 0
    else:
      conv_in_block += 1
      names += [f"conv{block}_{conv_in_block}", f"relu{block}_{conv_in_block}"]
  return tuple(names)


# VGG19_LAYER_NAMES[i] is the output of `features[i]` in torchvision's vgg19.
VGG19_LAYER_NAMES = _layer_names(_VGG19_CONFIG)
# The perceptual-loss layers of pix2pixHD / MegaPortraits: the first ReLU of every block.
PERCEPTUAL_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
# ImageNet statistics of RGB images in [0, 1] (torchvision's normalisation).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class VGG19(nn.Module):
  """VGG19 `features` returning the activations of the layers named in `layers`.

  Call: images [B, H, W, 3] in [-1, 1] -> list of feature maps, one per entry of `layers` in that
  order, e.g. relu1_1 [B, H, W, 64], relu2_1 [B, H/2, W/2, 128], ..., relu5_1 [B, H/16, W/16, 512].
  """
  layers: Sequence[str] = PERCEPTUAL_LAYERS  # names from VGG19_LAYER_NAMES
  dtype: Dtype = jnp.float32  # compute dtype
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, images: jax.Array) -> list[jax.Array]:
    unknown = [name for name in self.layers if name not in VGG19_LAYER_NAMES]
    if unknown or not self.layers:
      raise ValueError(f"VGG19 layers must be a non-empty subset of {VGG19_LAYER_NAMES}, "
                       f"got {tuple(self.layers)}")
    last_index = max(VGG19_LAYER_NAMES.index(name) for name in self.layers)
    mean = jnp.asarray(IMAGENET_MEAN, jnp.float32)
    std = jnp.asarray(IMAGENET_STD, jnp.float32)
    features = ((images.astype(jnp.float32) + 1.0) / 2.0 - mean) / std  # [B, H, W, 3]
    features = features.astype(self.dtype)
    outputs = {}  # layer name -> activation
    index = 0  # torchvision index of the next layer
    for entry in _VGG19_CONFIG:
      if index > last_index:
        break
      if entry == "M":
        features = nn.max_pool(features, (2, 2), strides=(2, 2))
        outputs[VGG19_LAYER_NAMES[index]] = features
        index += 1
        continue
      features = nn.Conv(
          entry, (3, 3), padding=((1, 1), (1, 1)), dtype=self.dtype, param_dtype=self.param_dtype,
          kernel_init=nn.with_logical_partitioning(nn.initializers.lecun_normal(),
                                                   (None, None, None, "channels")),
          name=f"features_{index}")(features)
      outputs[VGG19_LAYER_NAMES[index]] = features
      features = nn.relu(features)
      outputs[VGG19_LAYER_NAMES[index + 1]] = features
      index += 2
    return [outputs[name] for name in self.layers]
