"""PyTorch re-creation of HSEmotion's classifier, the reference of tests/test_emotion.py.

timm's `tf_efficientnet_b0` as HSEmotion trains it (`timm.create_model('tf_efficientnet_b0_ns')`
with `model.classifier = nn.Sequential(nn.Linear(1280, num_outputs))`): the modules and state_dict
names printed by HSEmotion's training notebook (conv_stem, bn1, blocks.S.B.{conv_pw, bn1, conv_dw,
bn2, se.conv_reduce, se.conv_expand, conv_pwl, bn3}, conv_head, bn2, classifier.0), strided convs
padded as timm's Conv2dSame does (TensorFlow SAME: the odd pixel after), BatchNorm eps 1e-3.
Written here because timm needs torchvision, which has no CPU wheel for this torch on PyPI.
"""

import math
from typing import List

import torch
import torch.nn.functional as F

# (blocks, kernel, stride, expansion, channels) of EfficientNet-B0's stages (timm's arch_def).
_STAGES = [(1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80),
           (3, 5, 1, 6, 112), (4, 5, 2, 6, 192), (1, 3, 1, 6, 320)]


def _pad_same(x: torch.Tensor, kernel: int, stride: int) -> torch.Tensor:
  """timm.layers.padding.pad_same: TF SAME padding, the extra pixel on the right/bottom."""
  pads: List[int] = []
  for size in (x.shape[-1], x.shape[-2]):
    total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
    pads += [total // 2, total - total // 2]
  return F.pad(x, pads)


class Conv2dSame(torch.nn.Conv2d):
  """timm's Conv2dSame for strided convs; stride-1 convs use torch's symmetric padding."""

  def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int = 1,
               groups: int = 1, bias: bool = False):
    super().__init__(in_channels, out_channels, kernel, stride,
                     padding=0 if stride > 1 else kernel // 2, groups=groups, bias=bias)
    self.same_kernel, self.same_stride = kernel, stride

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    if self.same_stride > 1:
      x = _pad_same(x, self.same_kernel, self.same_stride)
    return super().forward(x)


def _bn(channels: int) -> torch.nn.BatchNorm2d:
  return torch.nn.BatchNorm2d(channels, eps=1e-3)


class SqueezeExcite(torch.nn.Module):

  def __init__(self, channels: int, reduced: int):
    super().__init__()
    self.conv_reduce = torch.nn.Conv2d(channels, reduced, 1)
    self.conv_expand = torch.nn.Conv2d(reduced, channels, 1)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    gate = self.conv_expand(F.silu(self.conv_reduce(x.mean((2, 3), keepdim=True))))
    return x * torch.sigmoid(gate)


class DepthwiseSeparableConv(torch.nn.Module):

  def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int):
    super().__init__()
    self.conv_dw = Conv2dSame(in_channels, in_channels, kernel, stride, groups=in_channels)
    self.bn1 = _bn(in_channels)
    self.se = SqueezeExcite(in_channels, max(1, int(in_channels * 0.25)))
    self.conv_pw = torch.nn.Conv2d(in_channels, out_channels, 1, bias=False)
    self.bn2 = _bn(out_channels)
    self.skip = stride == 1 and in_channels == out_channels

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    y = self.bn2(self.conv_pw(self.se(F.silu(self.bn1(self.conv_dw(x))))))
    return y + x if self.skip else y


class InvertedResidual(torch.nn.Module):

  def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int,
               expansion: int):
    super().__init__()
    mid = in_channels * expansion
    self.conv_pw = torch.nn.Conv2d(in_channels, mid, 1, bias=False)
    self.bn1 = _bn(mid)
    self.conv_dw = Conv2dSame(mid, mid, kernel, stride, groups=mid)
    self.bn2 = _bn(mid)
    self.se = SqueezeExcite(mid, max(1, int(in_channels * 0.25)))
    self.conv_pwl = torch.nn.Conv2d(mid, out_channels, 1, bias=False)
    self.bn3 = _bn(out_channels)
    self.skip = stride == 1 and in_channels == out_channels

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    y = F.silu(self.bn1(self.conv_pw(x)))
    y = self.se(F.silu(self.bn2(self.conv_dw(y))))
    y = self.bn3(self.conv_pwl(y))
    return y + x if self.skip else y


class TorchEfficientNetB0(torch.nn.Module):
  """forward(x [B, 3, 224, 224], ImageNet-normalised) -> logits [B, num_outputs]."""

  def __init__(self, num_outputs: int = 8):
    super().__init__()
    self.conv_stem = Conv2dSame(3, 32, 3, 2)
    self.bn1 = _bn(32)
    stages, channels = [], 32
    for num_blocks, kernel, stride, expansion, out_channels in _STAGES:
      blocks = []
      for index in range(num_blocks):
        block_stride = stride if index == 0 else 1
        if expansion == 1:
          blocks.append(DepthwiseSeparableConv(channels, out_channels, kernel, block_stride))
        else:
          blocks.append(InvertedResidual(channels, out_channels, kernel, block_stride,
                                         expansion))
        channels = out_channels
      stages.append(torch.nn.Sequential(*blocks))
    self.blocks = torch.nn.Sequential(*stages)
    self.conv_head = torch.nn.Conv2d(channels, 1280, 1, bias=False)
    self.bn2 = _bn(1280)
    self.classifier = torch.nn.Sequential(torch.nn.Linear(1280, num_outputs))

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    x = F.silu(self.bn1(self.conv_stem(x)))
    x = self.blocks(x)
    x = F.silu(self.bn2(self.conv_head(x)))
    return self.classifier(x.mean((2, 3)))


def randomize(model: torch.nn.Module, generator: torch.Generator, gain: float = 1.4) -> None:
  """Random weights that keep the input's trace to the logits: conv kernels N(0, gain^2 / fan_in)
  (torch's default init shrinks the signal over the 50 convs until every image gives the same
  logits), random BatchNorm statistics and affine parameters (so their use is checked)."""
  for module in model.modules():
    if isinstance(module, torch.nn.Conv2d):
      fan_in = module.weight[0].numel()
      module.weight.data.normal_(0.0, gain / math.sqrt(fan_in), generator=generator)
    if isinstance(module, torch.nn.BatchNorm2d):
      size = module.num_features
      module.running_mean.copy_(0.1 * torch.randn(size, generator=generator))
      module.running_var.copy_(0.5 + torch.rand(size, generator=generator))
      module.weight.data.copy_(1.0 + 0.1 * torch.randn(size, generator=generator))
      module.bias.data.copy_(0.1 * torch.randn(size, generator=generator))
