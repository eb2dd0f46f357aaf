"""FVD and FID: the Frechet distance against scipy.linalg.sqrtm, I3D and InceptionV3 against
PyTorch re-creations (tests/torch_video_nets.py), their converters and loaders."""

import subprocess
import sys

import flax.linen as nn
import jax
import numpy as np
import pytest
import scipy.linalg
import torch

from data_prep import convert_weights
from tests import torch_syncnet
from tests import torch_video_nets
from vasa_jax.evaluators import frechet
from vasa_jax.models import i3d
from vasa_jax.models import inception
from vasa_jax.models import pretrained

SMALL_WIDTH = 0.125


def assert_close_relative(value, reference, tolerance=1e-4):
  value, reference = np.asarray(value), np.asarray(reference)
  assert value.shape == reference.shape
  assert np.abs(value - reference).max() <= tolerance * np.abs(reference).max()


def sqrtm_frechet(features_1, features_2, ddof):
  """The reference implementations' formula: trace of scipy.linalg.sqrtm(S1 S2)."""
  mu_1, mu_2 = features_1.mean(0), features_2.mean(0)
  sigma_1, sigma_2 = np.cov(features_1, rowvar=False, ddof=ddof), np.cov(features_2,
                                                                          rowvar=False, ddof=ddof)
  covmean = scipy.linalg.sqrtm(sigma_1 @ sigma_2)
  return float(np.real(((mu_1 - mu_2) ** 2).sum()
                       + np.trace(sigma_1 + sigma_2 - 2 * covmean)))


@pytest.mark.parametrize("num_samples", [(80, 70), (9, 12)])  # more / fewer than dimensions
def test_frechet_distance_equals_the_sqrtm_formula(num_samples):
  rng = np.random.default_rng(0)
  mixing = rng.normal(size=(16, 16))
  features_1 = rng.normal(size=(num_samples[0], 16)) @ mixing
  features_2 = rng.normal(size=(num_samples[1], 16)) @ (mixing + 0.3 * rng.normal(size=(16, 16)))
  features_2 += 0.5
  for ddof, function in ((0, frechet.fvd), (1, frechet.fid)):
    expected = sqrtm_frechet(features_1, features_2, ddof)
    assert function(features_1, features_2) == pytest.approx(expected, rel=1e-6)
    assert expected > 1.0
    # A set against itself: ~0 (tiny against the traces of ~100s).
    assert abs(function(features_1, features_1)) < 1e-8
    statistics = [frechet.feature_statistics(f, ddof) for f in (features_1, features_2)]
    # (With fewer samples than dimensions S_1 S_2 is singular: the square roots of its round-off
    # eigenvalues move sqrtm's and the covariance route's trace by ~1e-8 relative.)
    from_statistics = frechet.frechet_distance_from_statistics(*statistics[0], *statistics[1])
    assert from_statistics == pytest.approx(expected, rel=1e-6)
  mean, covariance = frechet.feature_statistics(features_1, ddof=1)
  np.testing.assert_allclose(covariance, np.cov(features_1, rowvar=False), rtol=1e-12)
  np.testing.assert_allclose(mean, features_1.mean(0))
  with pytest.raises(ValueError, match="features"):
    frechet.fid(features_1[:1], features_2)


def test_clips_and_frame_sampling():
  video = np.arange(60)[:, None, None, None] * np.ones((1, 2, 2, 3), np.uint8)
  clips = frechet.fvd_clips(video)
  assert clips.shape == (2, 25, 2, 2, 3)
  assert clips[1, 0, 0, 0, 0] == 25 and clips[1, -1, 0, 0, 0] == 49
  assert frechet.fvd_clips(video[:24]).shape[0] == 0
  sampled = frechet.evenly_spaced(video, 5)
  assert list(sampled[:, 0, 0, 0]) == [0, 15, 30, 44, 59]


@pytest.fixture(scope="module")
def i3d_release(tmp_path_factory):
  """(torch I3D at 1/8 width, its TorchScript archive, converted .npz) with random weights."""
  torch.manual_seed(0)
  model = torch_syncnet.randomised(torch_video_nets.TorchI3D(width=SMALL_WIDTH))
  directory = tmp_path_factory.mktemp("i3d")
  torch.jit.script(model).save(str(directory / "i3d_torchscript.pt"))
  convert_weights.convert(str(directory / "i3d_torchscript.pt"), str(directory / "i3d.npz"),
                          i3d.I3D(width=SMALL_WIDTH))
  return model, directory


def test_i3d_matches_torch_through_a_torchscript_archive(i3d_release):
  torch_model, directory = i3d_release
  variables = pretrained.load_i3d(str(directory / "i3d.npz"), width=SMALL_WIDTH)
  videos = np.random.default_rng(0).integers(0, 256, (2, 10, 96, 112, 3)).astype(np.uint8)
  logits = jax.jit(i3d.I3D(width=SMALL_WIDTH).apply)(variables, videos)
  with torch.no_grad():
    expected = torch_model(torch.from_numpy(videos).permute(0, 4, 1, 2, 3).float(),
                           rescale=True, resize=True, return_features=True)
  assert logits.shape == (2, 400)
  assert_close_relative(logits, expected.numpy())
  # The archive's tensors are read without torch.jit.load, in state_dict order.
  tensors = convert_weights.read_torchscript_tensors(str(directory / "i3d_torchscript.pt"))
  state_dict = torch_model.state_dict()
  assert list(tensors) == list(state_dict)
  for name, tensor in state_dict.items():
    np.testing.assert_array_equal(tensors[name], tensor.numpy())
  # A plain state dict of the same network converts to the same file.
  torch.save(state_dict, directory / "state_dict.pt")
  convert_weights.convert(str(directory / "state_dict.pt"), str(directory / "again.npz"),
                          i3d.I3D(width=SMALL_WIDTH))
  with np.load(directory / "i3d.npz") as first, np.load(directory / "again.npz") as second:
    assert sorted(first.files) == sorted(second.files)
    for name in first.files:
      np.testing.assert_array_equal(first[name], second[name])


def test_i3d_converter_and_loader_refuse_other_networks(i3d_release, tmp_path):
  torch_model, directory = i3d_release
  # Two convs swapped: the order no longer matches; the file's tensor is named.
  state_dict = dict(torch_model.state_dict())
  names = list(state_dict)
  order = names.copy()
  first = [i for i, n in enumerate(names) if n.startswith("mixed.0.branch_0.")]
  second = [i for i, n in enumerate(names) if n.startswith("mixed.0.branch_1.0.")]
  for i, j in zip(first, second):
    order[i], order[j] = order[j], order[i]
  torch.save({name: state_dict[name] for name in order}, tmp_path / "swapped.pt")
  with pytest.raises(ValueError, match=r"'mixed\.0\.branch_1\.0\.conv3d\.weight' has shape"):
    convert_weights.convert(str(tmp_path / "swapped.pt"), str(tmp_path / "x.npz"),
                            i3d.I3D(width=SMALL_WIDTH))
  # The full-size network is not in a 1/8-width file (the command line says so in one line).
  result = subprocess.run(
      [sys.executable, "-m", "data_prep.convert_weights", "--kind=i3d",
       f"--input={directory / 'i3d_torchscript.pt'}", f"--output={tmp_path / 'full.npz'}"],
      capture_output=True, text=True, check=False)
  assert result.returncode != 0
  assert "'conv3d_1a_7x7.conv3d.weight' has shape (8, 3, 7, 7, 7)" in result.stderr
  assert "Traceback" not in result.stderr
  # A mis-shaped tensor in a converted file.
  with np.load(directory / "i3d.npz") as archive:
    tensors = dict(archive)
  tensors["Mixed_4c.Branch_2.Conv3d_0b_3x3.conv_3d.weight"] = np.zeros((8, 3, 1, 3, 3),
                                                                        np.float32)
  np.savez(tmp_path / "bad.npz", **tensors)
  with pytest.raises(ValueError, match=r"'Mixed_4c\.Branch_2\.Conv3d_0b_3x3\.conv_3d\.weight' "
                     r"has shape \(8, 3, 1, 3, 3\) in the file but the model needs "
                     r"\(8, 3, 3, 3, 3\)"):
    pretrained.load_i3d(str(tmp_path / "bad.npz"), width=SMALL_WIDTH)


def test_i3d_full_size_shapes():
  model = pretrained.MODEL_KINDS["i3d"]
  variables = pretrained.abstract_variables(model)
  videos = jax.ShapeDtypeStruct((2, 25, 224, 224, 3), np.float32)
  assert jax.eval_shape(model.apply, variables, videos).shape == (2, 400)
  with torch.device("meta"):
    torch_model = torch_video_nets.TorchI3D()
  kernels = [leaf.shape for path, leaf in jax.tree_util.tree_flatten_with_path(
      nn.unbox(variables["params"]))[0] if path[-1].key == "kernel"]
  torch_kernels = [tuple(p.shape) for p in torch_model.parameters() if p.ndim == 5]
  assert sorted(k[4:] + k[3:4] + k[:3] for k in kernels) == sorted(torch_kernels)
  with pytest.raises(ValueError, match="at least 9 frames"):
    jax.eval_shape(model.apply, variables, jax.ShapeDtypeStruct((1, 8, 224, 224, 3), np.float32))


@pytest.fixture(scope="module")
def inception_release(tmp_path_factory):
  """(torch FID InceptionV3, converted .npz) from a pytorch-fid-layout state dict."""
  torch.manual_seed(0)
  model = torch_syncnet.randomised(torch_video_nets.TorchFIDInception())
  directory = tmp_path_factory.mktemp("inception")
  torch.save(model.state_dict(), directory / "pt_inception-2015-12-05-6726825d.pth")
  convert_weights.convert(str(directory / "pt_inception-2015-12-05-6726825d.pth"),
                          str(directory / "inception.npz"), pretrained.MODEL_KINDS["inception"])
  return model, str(directory / "inception.npz")


def test_inception_matches_pytorch_fid(inception_release, tmp_path):
  torch_model, weights_path = inception_release
  variables = pretrained.load_inception(weights_path)
  images = np.random.default_rng(1).uniform(0, 1, (2, 120, 100, 3)).astype(np.float32)
  features = jax.jit(inception.FIDInceptionV3().apply)(variables, images)
  with torch.no_grad():
    expected = torch_model(torch.from_numpy(images).permute(0, 3, 1, 2))
  assert features.shape == (2, 2048)
  assert_close_relative(features, expected.numpy())
  params = sum(leaf.size for leaf in jax.tree.leaves(nn.unbox(variables["params"])))
  assert params == sum(p.numel() for name, p in torch_model.named_parameters()
                       if not name.startswith("fc."))
  with np.load(weights_path) as archive:
    tensors = dict(archive)
  del tensors["Mixed_6b.branch7x7dbl_3.bn.running_var"]
  np.savez(tmp_path / "bad.npz", **tensors)
  with pytest.raises(ValueError, match=r"'Mixed_6b\.branch7x7dbl_3\.bn\.running_var' is missing"):
    pretrained.load_inception(str(tmp_path / "bad.npz"))
