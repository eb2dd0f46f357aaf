"""PyTorch re-creation of joonson/syncnet_python's `SyncNetModel.S` and `SyncNetInstance.evaluate`.

The reference the Flax SyncNet and the evaluator are checked against. `width` scales the hidden
channels (1.0 is syncnet_python's network, layer for layer) so that end-to-end tests can run a
small one. `reference_evaluate` follows `evaluate` after its ffmpeg steps: the frames
(cv2's BGR, float 0-255) and the int16 16 kHz audio are given directly.
"""

import math

import numpy as np
import python_speech_features
import torch


def _channels(channels, width):
  return max(1, round(channels * width))


class TorchSyncNet(torch.nn.Module):
  """syncnet_python's `S` (num_layers_in_fc_layers = embedding_size)."""

  def __init__(self, width=1.0, embedding_size=1024):
    super().__init__()
    c = lambda n: _channels(n, width)  # pylint: disable=unnecessary-lambda-assignment
    nn = torch.nn
    self.netcnnaud = nn.Sequential(
        nn.Conv2d(1, c(64), kernel_size=(3, 3), stride=(1, 1), padding=(1, 1)),
        nn.BatchNorm2d(c(64)), nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=(1, 1), stride=(1, 1)),
        nn.Conv2d(c(64), c(192), kernel_size=(3, 3), stride=(1, 1), padding=(1, 1)),
        nn.BatchNorm2d(c(192)), nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=(3, 3), stride=(1, 2)),
        nn.Conv2d(c(192), c(384), kernel_size=(3, 3), padding=(1, 1)),
        nn.BatchNorm2d(c(384)), nn.ReLU(inplace=True),
        nn.Conv2d(c(384), c(256), kernel_size=(3, 3), padding=(1, 1)),
        nn.BatchNorm2d(c(256)), nn.ReLU(inplace=True),
        nn.Conv2d(c(256), c(256), kernel_size=(3, 3), padding=(1, 1)),
        nn.BatchNorm2d(c(256)), nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=(3, 3), stride=(2, 2)),
        nn.Conv2d(c(256), c(512), kernel_size=(5, 4), padding=(0, 0)),
        nn.BatchNorm2d(c(512)), nn.ReLU())
    self.netfcaud = nn.Sequential(
        nn.Linear(c(512), c(512)), nn.BatchNorm1d(c(512)), nn.ReLU(),
        nn.Linear(c(512), embedding_size))
    self.netfclip = nn.Sequential(
        nn.Linear(c(512), c(512)), nn.BatchNorm1d(c(512)), nn.ReLU(),
        nn.Linear(c(512), embedding_size))
    self.netcnnlip = nn.Sequential(
        nn.Conv3d(3, c(96), kernel_size=(5, 7, 7), stride=(1, 2, 2), padding=0),
        nn.BatchNorm3d(c(96)), nn.ReLU(inplace=True),
        nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2)),
        nn.Conv3d(c(96), c(256), kernel_size=(1, 5, 5), stride=(1, 2, 2), padding=(0, 1, 1)),
        nn.BatchNorm3d(c(256)), nn.ReLU(inplace=True),
        nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)),
        nn.Conv3d(c(256), c(256), kernel_size=(1, 3, 3), padding=(0, 1, 1)),
        nn.BatchNorm3d(c(256)), nn.ReLU(inplace=True),
        nn.Conv3d(c(256), c(256), kernel_size=(1, 3, 3), padding=(0, 1, 1)),
        nn.BatchNorm3d(c(256)), nn.ReLU(inplace=True),
        nn.Conv3d(c(256), c(256), kernel_size=(1, 3, 3), padding=(0, 1, 1)),
        nn.BatchNorm3d(c(256)), nn.ReLU(inplace=True),
        nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2)),
        nn.Conv3d(c(256), c(512), kernel_size=(1, 6, 6), padding=0),
        nn.BatchNorm3d(c(512)), nn.ReLU(inplace=True))

  def forward_aud(self, x):
    mid = self.netcnnaud(x)
    return self.netfcaud(mid.view((mid.size()[0], -1)))

  def forward_lip(self, x):
    mid = self.netcnnlip(x)
    return self.netfclip(mid.view((mid.size()[0], -1)))


def randomised(model, seed=1):
  """The model in eval mode with non-trivial BatchNorm statistics and affines."""
  generator = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for module in model.modules():
      if isinstance(module, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d, torch.nn.BatchNorm3d)):
        size = module.num_features
        module.running_mean.copy_(0.2 * torch.randn(size, generator=generator))
        module.running_var.copy_(0.5 + torch.rand(size, generator=generator))
        module.weight.copy_(0.5 + torch.rand(size, generator=generator))
        module.bias.copy_(0.2 * torch.randn(size, generator=generator))
  return model.eval()


def calc_pdist(feat1, feat2, vshift=10):
  win_size = vshift * 2 + 1
  feat2p = torch.nn.functional.pad(feat2, (0, 0, vshift, vshift))
  return [torch.nn.functional.pairwise_distance(feat1[[i], :].repeat(win_size, 1),
                                                feat2p[i:i + win_size, :])
          for i in range(len(feat1))]


@torch.no_grad()
def reference_evaluate(model, frames_rgb, audio_int16, vshift=15, batch_size=20):
  """(offset, conf, minval) of `SyncNetInstance.evaluate` on uint8 RGB frames [T, H, W, 3]."""
  images = np.asarray(frames_rgb)[..., ::-1]  # cv2.imread gives BGR
  im = np.transpose(images[None], (0, 4, 1, 2, 3))  # [1, 3, T, H, W]
  imtv = torch.from_numpy(im.astype(float)).float()
  mfcc = np.stack([np.array(i) for i in zip(*python_speech_features.mfcc(audio_int16, 16000))])
  cct = torch.from_numpy(np.expand_dims(np.expand_dims(mfcc, 0), 0).astype(float)).float()
  min_length = min(len(images), math.floor(len(audio_int16) / 640))
  lastframe = min_length - 5
  im_feat, cc_feat = [], []
  for i in range(0, lastframe, batch_size):
    frames = range(i, min(lastframe, i + batch_size))
    im_feat.append(model.forward_lip(torch.cat([imtv[:, :, v:v + 5] for v in frames], 0)))
    cc_feat.append(model.forward_aud(
        torch.cat([cct[:, :, :, v * 4:v * 4 + 20] for v in frames], 0)))
  dists = calc_pdist(torch.cat(im_feat, 0), torch.cat(cc_feat, 0), vshift=vshift)
  mdist = torch.mean(torch.stack(dists, 1), 1)
  minval, minidx = torch.min(mdist, 0)
  offset = vshift - minidx
  conf = torch.median(mdist) - minval
  return int(offset), float(conf), float(minval)
