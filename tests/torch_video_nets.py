"""PyTorch re-creations of the FVD and FID networks, the references of tests/test_frechet.py.

TorchI3D: DeepMind's InceptionI3d (TF-Hub i3d-kinetics-400) with TensorFlow's SAME padding done
by explicit padding (zeros for convs, -inf for max pools), Sonnet's BatchNorm (eps 1e-3), and the
call of StyleGAN-V's `i3d_torchscript.pt`: forward(x [B, 3, T, H, W], rescale, resize,
return_features) -> the time-averaged logits. Its modules are named unlike the Flax model
(`conv3d_1a_7x7.conv3d`, `mixed_3b.branch_1.1.bn`, ...) so that the converter's order-based
matching is what the tests check. `width` scales the channels (1.0: the released network).

TorchFIDInception: pytorch-fid's `InceptionV3` with `use_fid_inception=True` (torchvision's
Inception3 layout with the FIDInceptionA / C / E_1 / E_2 patches), returning the pool3 features.
"""

from typing import List

import torch
import torch.nn.functional as F

from vasa_jax.models import i3d as flax_i3d


def _same_padding(size: int, kernel: int, stride: int) -> List[int]:
  out = (size + stride - 1) // stride
  total = max((out - 1) * stride + kernel - size, 0)
  return [total // 2, total - total // 2]


def same_pad(x: torch.Tensor, kernel: List[int], stride: List[int], value: float) -> torch.Tensor:
  """TensorFlow SAME padding of [B, C, T, H, W] (the extra element after)."""
  t = _same_padding(x.shape[2], kernel[0], stride[0])
  h = _same_padding(x.shape[3], kernel[1], stride[1])
  w = _same_padding(x.shape[4], kernel[2], stride[2])
  return F.pad(x, [w[0], w[1], h[0], h[1], t[0], t[1]], value=value)


class TorchUnit3D(torch.nn.Module):
  """SAME conv (no bias) -> BatchNorm -> ReLU."""

  def __init__(self, in_channels: int, out_channels: int, kernel: List[int],
               stride: List[int]):
    super().__init__()
    self.kernel, self.stride = kernel, stride
    self.conv3d = torch.nn.Conv3d(in_channels, out_channels, kernel, stride, bias=False)
    self.bn = torch.nn.BatchNorm3d(out_channels, eps=1e-3)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    return torch.relu(self.bn(self.conv3d(same_pad(x, self.kernel, self.stride, 0.0))))


def max_pool_same(x: torch.Tensor, kernel: List[int], stride: List[int]) -> torch.Tensor:
  return F.max_pool3d(same_pad(x, kernel, stride, float("-inf")), kernel, stride)


class TorchMixed(torch.nn.Module):

  def __init__(self, in_channels: int, channels: List[int]):
    super().__init__()
    b0, b1a, b1b, b2a, b2b, b3 = channels
    self.branch_0 = TorchUnit3D(in_channels, b0, [1, 1, 1], [1, 1, 1])
    self.branch_1 = torch.nn.Sequential(TorchUnit3D(in_channels, b1a, [1, 1, 1], [1, 1, 1]),
                                        TorchUnit3D(b1a, b1b, [3, 3, 3], [1, 1, 1]))
    self.branch_2 = torch.nn.Sequential(TorchUnit3D(in_channels, b2a, [1, 1, 1], [1, 1, 1]),
                                        TorchUnit3D(b2a, b2b, [3, 3, 3], [1, 1, 1]))
    self.branch_3 = TorchUnit3D(in_channels, b3, [1, 1, 1], [1, 1, 1])

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    pooled = max_pool_same(x, [3, 3, 3], [1, 1, 1])
    return torch.cat([self.branch_0(x), self.branch_1(x), self.branch_2(x),
                      self.branch_3(pooled)], 1)


class TorchI3D(torch.nn.Module):

  def __init__(self, width: float = 1.0, num_classes: int = 400):
    super().__init__()
    def c(n):
      return flax_i3d.scaled_channels(n, width)

    self.conv3d_1a_7x7 = TorchUnit3D(3, c(64), [7, 7, 7], [2, 2, 2])
    self.conv3d_2b_1x1 = TorchUnit3D(c(64), c(64), [1, 1, 1], [1, 1, 1])
    self.conv3d_2c_3x3 = TorchUnit3D(c(64), c(192), [3, 3, 3], [1, 1, 1])
    mixed, channels = [], c(192)
    for name in flax_i3d.MIXED_CHANNELS:
      block = [c(n) for n in flax_i3d.MIXED_CHANNELS[name]]
      mixed.append(TorchMixed(channels, block))
      channels = block[0] + block[2] + block[4] + block[5]
    self.mixed = torch.nn.ModuleList(mixed)
    self.logits = torch.nn.Conv3d(channels, num_classes, 1, bias=True)

  def forward(self, x: torch.Tensor, rescale: bool = False, resize: bool = False,
              return_features: bool = False) -> torch.Tensor:
    if rescale:
      x = x / 127.5 - 1.0
    if resize:
      b, c, t, h, w = x.shape
      frames = x.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)
      frames = F.interpolate(frames, size=[224, 224], mode="bilinear", align_corners=False)
      x = frames.reshape(b, t, c, 224, 224).permute(0, 2, 1, 3, 4)
    x = self.conv3d_1a_7x7(x)
    x = max_pool_same(x, [1, 3, 3], [1, 2, 2])
    x = self.conv3d_2c_3x3(self.conv3d_2b_1x1(x))
    x = max_pool_same(x, [1, 3, 3], [1, 2, 2])
    for index, block in enumerate(self.mixed):
      x = block(x)
      if index == 1:
        x = max_pool_same(x, [3, 3, 3], [2, 2, 2])
      elif index == 6:
        x = max_pool_same(x, [2, 2, 2], [2, 2, 2])
    x = F.avg_pool3d(x, [2, 7, 7], [1, 1, 1])
    logits = self.logits(x).squeeze(4).squeeze(3)  # [B, classes, T]
    logits = logits.mean(2)
    return logits if return_features else torch.softmax(logits, 1)


class BasicConv2d(torch.nn.Module):

  def __init__(self, in_channels, out_channels, **kwargs):
    super().__init__()
    self.conv = torch.nn.Conv2d(in_channels, out_channels, bias=False, **kwargs)
    self.bn = torch.nn.BatchNorm2d(out_channels, eps=0.001)

  def forward(self, x):
    return torch.relu(self.bn(self.conv(x)))


def _avg_pool(x):
  return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class FIDInceptionA(torch.nn.Module):

  def __init__(self, in_channels, pool_features):
    super().__init__()
    self.branch1x1 = BasicConv2d(in_channels, 64, kernel_size=1)
    self.branch5x5_1 = BasicConv2d(in_channels, 48, kernel_size=1)
    self.branch5x5_2 = BasicConv2d(48, 64, kernel_size=5, padding=2)
    self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, kernel_size=1)
    self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
    self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, padding=1)
    self.branch_pool = BasicConv2d(in_channels, pool_features, kernel_size=1)

  def forward(self, x):
    return torch.cat([
        self.branch1x1(x), self.branch5x5_2(self.branch5x5_1(x)),
        self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
        self.branch_pool(_avg_pool(x))], 1)


class InceptionB(torch.nn.Module):

  def __init__(self, in_channels):
    super().__init__()
    self.branch3x3 = BasicConv2d(in_channels, 384, kernel_size=3, stride=2)
    self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, kernel_size=1)
    self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
    self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, stride=2)

  def forward(self, x):
    return torch.cat([
        self.branch3x3(x), self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
        F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class FIDInceptionC(torch.nn.Module):

  def __init__(self, in_channels, channels_7x7):
    super().__init__()
    c7 = channels_7x7
    self.branch1x1 = BasicConv2d(in_channels, 192, kernel_size=1)
    self.branch7x7_1 = BasicConv2d(in_channels, c7, kernel_size=1)
    self.branch7x7_2 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
    self.branch7x7_3 = BasicConv2d(c7, 192, kernel_size=(7, 1), padding=(3, 0))
    self.branch7x7dbl_1 = BasicConv2d(in_channels, c7, kernel_size=1)
    self.branch7x7dbl_2 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
    self.branch7x7dbl_3 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
    self.branch7x7dbl_4 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
    self.branch7x7dbl_5 = BasicConv2d(c7, 192, kernel_size=(1, 7), padding=(0, 3))
    self.branch_pool = BasicConv2d(in_channels, 192, kernel_size=1)

  def forward(self, x):
    b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
    d7 = self.branch7x7dbl_1(x)
    for layer in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4,
                  self.branch7x7dbl_5):
      d7 = layer(d7)
    return torch.cat([self.branch1x1(x), b7, d7, self.branch_pool(_avg_pool(x))], 1)


class InceptionD(torch.nn.Module):

  def __init__(self, in_channels):
    super().__init__()
    self.branch3x3_1 = BasicConv2d(in_channels, 192, kernel_size=1)
    self.branch3x3_2 = BasicConv2d(192, 320, kernel_size=3, stride=2)
    self.branch7x7x3_1 = BasicConv2d(in_channels, 192, kernel_size=1)
    self.branch7x7x3_2 = BasicConv2d(192, 192, kernel_size=(1, 7), padding=(0, 3))
    self.branch7x7x3_3 = BasicConv2d(192, 192, kernel_size=(7, 1), padding=(3, 0))
    self.branch7x7x3_4 = BasicConv2d(192, 192, kernel_size=3, stride=2)

  def forward(self, x):
    b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
    return torch.cat([self.branch3x3_2(self.branch3x3_1(x)), b7,
                      F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class FIDInceptionE(torch.nn.Module):

  def __init__(self, in_channels, max_pool):
    super().__init__()
    self.max_pool = max_pool
    self.branch1x1 = BasicConv2d(in_channels, 320, kernel_size=1)
    self.branch3x3_1 = BasicConv2d(in_channels, 384, kernel_size=1)
    self.branch3x3_2a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
    self.branch3x3_2b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
    self.branch3x3dbl_1 = BasicConv2d(in_channels, 448, kernel_size=1)
    self.branch3x3dbl_2 = BasicConv2d(448, 384, kernel_size=3, padding=1)
    self.branch3x3dbl_3a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
    self.branch3x3dbl_3b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
    self.branch_pool = BasicConv2d(in_channels, 192, kernel_size=1)

  def forward(self, x):
    b3 = self.branch3x3_1(x)
    b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
    d3 = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
    d3 = torch.cat([self.branch3x3dbl_3a(d3), self.branch3x3dbl_3b(d3)], 1)
    if self.max_pool:
      pooled = F.max_pool2d(x, kernel_size=3, stride=1, padding=1)
    else:
      pooled = _avg_pool(x)
    return torch.cat([self.branch1x1(x), b3, d3, self.branch_pool(pooled)], 1)


class TorchFIDInception(torch.nn.Module):
  """fid_inception_v3() up to the final average pool (pytorch-fid's block 3 output)."""

  def __init__(self):
    super().__init__()
    self.Conv2d_1a_3x3 = BasicConv2d(3, 32, kernel_size=3, stride=2)
    self.Conv2d_2a_3x3 = BasicConv2d(32, 32, kernel_size=3)
    self.Conv2d_2b_3x3 = BasicConv2d(32, 64, kernel_size=3, padding=1)
    self.Conv2d_3b_1x1 = BasicConv2d(64, 80, kernel_size=1)
    self.Conv2d_4a_3x3 = BasicConv2d(80, 192, kernel_size=3)
    self.Mixed_5b = FIDInceptionA(192, pool_features=32)
    self.Mixed_5c = FIDInceptionA(256, pool_features=64)
    self.Mixed_5d = FIDInceptionA(288, pool_features=64)
    self.Mixed_6a = InceptionB(288)
    self.Mixed_6b = FIDInceptionC(768, channels_7x7=128)
    self.Mixed_6c = FIDInceptionC(768, channels_7x7=160)
    self.Mixed_6d = FIDInceptionC(768, channels_7x7=160)
    self.Mixed_6e = FIDInceptionC(768, channels_7x7=192)
    self.Mixed_7a = InceptionD(768)
    self.Mixed_7b = FIDInceptionE(1280, max_pool=False)
    self.Mixed_7c = FIDInceptionE(2048, max_pool=True)
    self.fc = torch.nn.Linear(2048, 1008)  # in the released file, unused for FID

  def forward(self, x):
    """x [B, 3, H, W] in [0, 1] -> [B, 2048] (resize_input and normalize_input on)."""
    x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
    x = 2 * x - 1
    x = F.max_pool2d(self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x))), 3, 2)
    x = F.max_pool2d(self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x)), 3, 2)
    for block in (self.Mixed_5b, self.Mixed_5c, self.Mixed_5d, self.Mixed_6a, self.Mixed_6b,
                  self.Mixed_6c, self.Mixed_6d, self.Mixed_6e, self.Mixed_7a, self.Mixed_7b,
                  self.Mixed_7c):
      x = block(x)
    return F.adaptive_avg_pool2d(x, (1, 1)).flatten(1)
