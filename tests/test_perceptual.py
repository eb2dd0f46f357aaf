"""VGG19 and ArcFace IResNet against PyTorch references, weight conversion and loading, losses.

The "released" checkpoints are small random PyTorch models written here with exactly the released
layouts (torchvision's vgg19, insightface's arcface_torch iresnet), saved with `torch.save`, run
through `data_prep.convert_weights` and loaded with `vasa_jax.models.pretrained`.
"""

import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from vasa_jax.training import base_config as config_lib
from data_prep import convert_weights
from vasa_jax.models import pretrained
from vasa_jax.models import iresnet
from vasa_jax.models import perceptual
from vasa_jax.models import vgg
from vasa_jax.training import sharding as sharding_lib

# torchvision's vgg19 ("E") features configuration.
TORCHVISION_VGG19 = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M",
                     512, 512, 512, 512, "M", 512, 512, 512, 512, "M")
# torchvision indices of relu1_1, relu2_1, relu3_1, relu4_1, relu5_1.
PERCEPTUAL_INDICES = (1, 6, 11, 20, 29)
SMALL_STAGE_BLOCKS = (1, 2, 1, 1)
# Max |flax - torch| allowed, relative to max |torch| of the compared tensor.
RELATIVE_TOLERANCE = 1e-4


class TorchVGG19(torch.nn.Module):
  """torchvision's vgg19 `features` (the classifier is left out)."""

  def __init__(self):
    super().__init__()
    layers, channels = [], 3
    for entry in TORCHVISION_VGG19:
      if entry == "M":
        layers.append(torch.nn.MaxPool2d(kernel_size=2, stride=2))
      else:
        layers += [torch.nn.Conv2d(channels, entry, kernel_size=3, padding=1), torch.nn.ReLU()]
        channels = entry
    self.features = torch.nn.Sequential(*layers)

  def forward(self, images, indices):
    outputs = []
    for index, layer in enumerate(self.features[:max(indices) + 1]):
      images = layer(images)
      if index in indices:
        outputs.append(images)
    return outputs


class TorchIBasicBlock(torch.nn.Module):
  """insightface arcface_torch IBasicBlock."""

  def __init__(self, inplanes, planes, stride):
    super().__init__()
    self.bn1 = torch.nn.BatchNorm2d(inplanes, eps=1e-5)
    self.conv1 = torch.nn.Conv2d(inplanes, planes, 3, stride=1, padding=1, bias=False)
    self.bn2 = torch.nn.BatchNorm2d(planes, eps=1e-5)
    self.prelu = torch.nn.PReLU(planes)
    self.conv2 = torch.nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
    self.bn3 = torch.nn.BatchNorm2d(planes, eps=1e-5)
    self.downsample = None
    if stride != 1 or inplanes != planes:
      self.downsample = torch.nn.Sequential(
          torch.nn.Conv2d(inplanes, planes, 1, stride=stride, bias=False),
          torch.nn.BatchNorm2d(planes, eps=1e-5))

  def forward(self, x):
    out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
    return out + (x if self.downsample is None else self.downsample(x))


class TorchIResNet(torch.nn.Module):
  """insightface arcface_torch IResNet; forward returns (embedding, layer1..layer4 outputs)."""

  def __init__(self, layers, num_features=512):
    super().__init__()
    self.conv1 = torch.nn.Conv2d(3, 64, 3, stride=1, padding=1, bias=False)
    self.bn1 = torch.nn.BatchNorm2d(64, eps=1e-5)
    self.prelu = torch.nn.PReLU(64)
    inplanes = 64
    for stage, (blocks, planes) in enumerate(zip(layers, (64, 128, 256, 512)), 1):
      stage_blocks = [TorchIBasicBlock(inplanes, planes, 2)]
      stage_blocks += [TorchIBasicBlock(planes, planes, 1) for _ in range(blocks - 1)]
      setattr(self, f"layer{stage}", torch.nn.Sequential(*stage_blocks))
      inplanes = planes
    self.bn2 = torch.nn.BatchNorm2d(512, eps=1e-5)
    self.dropout = torch.nn.Dropout(p=0.0)
    self.fc = torch.nn.Linear(512 * 7 * 7, num_features)
    self.features = torch.nn.BatchNorm1d(num_features, eps=1e-5)

  def forward(self, x):
    x = self.prelu(self.bn1(self.conv1(x)))
    stage_outputs = []
    for stage in (self.layer1, self.layer2, self.layer3, self.layer4):
      x = stage(x)
      stage_outputs.append(x)
    x = self.dropout(torch.flatten(self.bn2(x), 1))
    return self.features(self.fc(x)), stage_outputs


def randomise_norms(model):
  """Non-trivial BatchNorm statistics/affines and PReLU slopes, so the comparison covers them."""
  generator = torch.Generator().manual_seed(1)
  with torch.no_grad():
    for module in model.modules():
      if isinstance(module, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
        size = module.num_features
        module.running_mean.copy_(0.2 * torch.randn(size, generator=generator))
        module.running_var.copy_(0.5 + torch.rand(size, generator=generator))
        module.weight.copy_(0.5 + torch.rand(size, generator=generator))
        module.bias.copy_(0.2 * torch.randn(size, generator=generator))
      elif isinstance(module, torch.nn.PReLU):
        module.weight.copy_(0.5 * torch.rand(module.weight.shape, generator=generator))
  return model.eval()


def assert_close_relative(flax_value, torch_value):
  torch_value = torch_value.detach().numpy()
  if torch_value.ndim == 4:
    torch_value = torch_value.transpose(0, 2, 3, 1)  # NCHW -> NHWC
  flax_value = np.asarray(flax_value)
  assert flax_value.shape == torch_value.shape
  scale = np.abs(torch_value).max()
  assert scale > 0
  assert np.abs(flax_value - torch_value).max() <= RELATIVE_TOLERANCE * scale


def parameter_count(tree):
  return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(nn.unbox(tree)))


def flax_module_path(torch_module_name):
  """torch "layer1.0.downsample.1" -> Flax ["layer1_0", "downsample_1"]."""
  path = []
  for part in torch_module_name.split("."):
    if part.isdigit():
      path[-1] += f"_{part}"
    else:
      path.append(part)
  return path


def torch_direct_variables(model, module_names=None):
  """Flax variables assigned directly from the torch modules (independent of the loader).

  Only the modules named in `module_names` are taken (all when None).
  """
  variables = {"params": {}, "batch_stats": {}}

  def put(collection, module_name, leaf, value):
    node = variables[collection]
    for part in flax_module_path(module_name):
      node = node.setdefault(part, {})
    node[leaf] = value.detach().numpy()

  for name, module in model.named_modules():
    if module_names is not None and name not in module_names:
      continue
    if isinstance(module, torch.nn.Conv2d):
      put("params", name, "kernel", module.weight.permute(2, 3, 1, 0))
      if module.bias is not None:
        put("params", name, "bias", module.bias)
    elif isinstance(module, torch.nn.Linear):
      put("params", name, "kernel", module.weight.T)
      put("params", name, "bias", module.bias)
    elif isinstance(module, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
      put("params", name, "scale", module.weight)
      put("params", name, "bias", module.bias)
      put("batch_stats", name, "mean", module.running_mean)
      put("batch_stats", name, "var", module.running_var)
    elif isinstance(module, torch.nn.PReLU):
      put("params", name, "negative_slope", module.weight)
  return {collection: tree for collection, tree in variables.items() if tree}


@pytest.fixture(scope="module")
def vgg_release(tmp_path_factory):
  """(torch VGG19, path of its converted .npz) from a torchvision-layout .pth."""
  torch.manual_seed(0)
  model = TorchVGG19().eval()
  directory = tmp_path_factory.mktemp("vgg19")
  state_dict = dict(model.state_dict())
  state_dict["classifier.0.weight"] = torch.zeros(4, 8)  # released files hold the classifier too
  torch.save(state_dict, directory / "vgg19.pth")
  convert_weights.convert(str(directory / "vgg19.pth"), str(directory / "vgg19.npz"),
                          pretrained.MODEL_KINDS["vgg19"])
  return model, str(directory / "vgg19.npz")


@pytest.fixture(scope="module")
def iresnet_release(tmp_path_factory):
  """(torch IResNet, path of its converted .npz, directory); small depth, arcface_torch names."""
  torch.manual_seed(0)
  model = randomise_norms(TorchIResNet(SMALL_STAGE_BLOCKS))
  directory = tmp_path_factory.mktemp("iresnet")
  # Wrapped and DataParallel-prefixed, as some training scripts save it.
  torch.save({"state_dict": {f"module.{name}": tensor
                             for name, tensor in model.state_dict().items()}},
             directory / "backbone.pth")
  convert_weights.convert(str(directory / "backbone.pth"), str(directory / "backbone.npz"),
                          iresnet.IResNet(stage_blocks=SMALL_STAGE_BLOCKS))
  return model, str(directory / "backbone.npz"), directory


def test_vgg19_matches_torch_and_direct_assignment(vgg_release):
  torch_model, weights_path = vgg_release
  images = np.random.default_rng(0).uniform(-1, 1, (2, 64, 64, 3)).astype(np.float32)
  model = vgg.VGG19()
  loaded = pretrained.load_vgg19(weights_path)
  flax_features = model.apply(loaded, images)

  mean = torch.tensor(vgg.IMAGENET_MEAN).view(1, 3, 1, 1)
  std = torch.tensor(vgg.IMAGENET_STD).view(1, 3, 1, 1)
  torch_images = (torch.from_numpy(images).permute(0, 3, 1, 2) + 1) / 2
  with torch.no_grad():
    torch_features = torch_model((torch_images - mean) / std, PERCEPTUAL_INDICES)
  assert [f.shape for f in flax_features] == [
      (2, 64, 64, 64), (2, 32, 32, 128), (2, 16, 16, 256), (2, 8, 8, 512), (2, 4, 4, 512)]
  for flax_feature, torch_feature in zip(flax_features, torch_features):
    assert_close_relative(flax_feature, torch_feature)

  # The loader keeps the logical axis names of the module's own init.
  kernel = loaded["params"]["features_0"]["kernel"]
  assert kernel.names == (None, None, None, "channels")
  direct = torch_direct_variables(torch_model, {f"features.{i}" for i in range(29)})
  jax.tree.map(np.testing.assert_array_equal, nn.unbox(loaded), direct)
  for loaded_feature, direct_feature in zip(flax_features, model.apply(direct, images)):
    np.testing.assert_array_equal(loaded_feature, direct_feature)


def test_iresnet_matches_torch_and_direct_assignment(iresnet_release):
  torch_model, weights_path, _ = iresnet_release
  images = np.random.default_rng(1).uniform(-1, 1, (2, 112, 112, 3)).astype(np.float32)
  model = iresnet.IResNet(stage_blocks=SMALL_STAGE_BLOCKS)
  loaded = pretrained.load_iresnet(weights_path, depth=SMALL_STAGE_BLOCKS)
  embedding, stage_features = model.apply(loaded, images)
  with torch.no_grad():
    torch_embedding, torch_stage_features = torch_model(
        torch.from_numpy(images).permute(0, 3, 1, 2))
  assert embedding.shape == (2, 512)
  assert_close_relative(embedding, torch_embedding)
  assert [f.shape[1:] for f in stage_features] == [
      (56, 56, 64), (28, 28, 128), (14, 14, 256), (7, 7, 512)]
  for flax_feature, torch_feature in zip(stage_features, torch_stage_features):
    assert_close_relative(flax_feature, torch_feature)

  direct = torch_direct_variables(torch_model)
  jax.tree.map(np.testing.assert_array_equal, nn.unbox(loaded), direct)
  direct_embedding, _ = model.apply(direct, images)
  np.testing.assert_array_equal(embedding, direct_embedding)

  # The loaded variables keep their logical axis names: shard them FSDP over the 8 devices.
  mesh = sharding_lib.create_mesh({"data": 1, "fsdp": -1, "model": 1})
  shardings = sharding_lib.state_shardings(loaded, mesh, config_lib.base_config().sharding_rules)
  assert shardings["params"]["fc"]["kernel"].spec == jax.sharding.PartitionSpec(None, "fsdp")
  sharded = jax.device_put(nn.unbox(loaded), shardings)
  sharded_embedding, _ = jax.jit(model.apply)(sharded, images)
  assert_close_relative(sharded_embedding, torch_embedding)


def test_loader_refuses_a_mis_shaped_tensor(vgg_release, iresnet_release, tmp_path):
  _, vgg_path = vgg_release
  with np.load(vgg_path) as archive:
    tensors = dict(archive)
  tensors["features.2.weight"] = np.zeros((64, 32, 3, 3), np.float32)
  np.savez(tmp_path / "bad_vgg.npz", **tensors)
  with pytest.raises(ValueError, match=r"'features\.2\.weight' has shape \(64, 32, 3, 3\) in the "
                     r"file but the model needs \(64, 64, 3, 3\)"):
    pretrained.load_vgg19(str(tmp_path / "bad_vgg.npz"))

  _, iresnet_path, _ = iresnet_release
  with np.load(iresnet_path) as archive:
    tensors = dict(archive)
  del tensors["layer2.1.prelu.weight"]
  np.savez(tmp_path / "bad_iresnet.npz", **tensors)
  with pytest.raises(ValueError, match=r"'layer2\.1\.prelu\.weight' is missing"):
    pretrained.load_iresnet(str(tmp_path / "bad_iresnet.npz"), depth=SMALL_STAGE_BLOCKS)


def test_missing_weight_files_are_named(tmp_path):
  missing = str(tmp_path / "nowhere" / "vgg19.npz")
  with pytest.raises(FileNotFoundError, match="nowhere/vgg19.npz"):
    pretrained.load_vgg19(missing)
  with pytest.raises(FileNotFoundError, match="nowhere/vgg19.npz"):
    pretrained.load_iresnet(missing, depth=50)
  with pytest.raises(FileNotFoundError, match="nowhere/vgg19.npz"):
    convert_weights.convert(missing, str(tmp_path / "out.npz"), pretrained.MODEL_KINDS["vgg19"])


def test_converter_refuses_wrong_checkpoints(vgg_release, iresnet_release, tmp_path):
  torch_model, _ = vgg_release
  state_dict = dict(torch_model.state_dict())
  state_dict["features.0.weight"] = torch.zeros(64, 4, 3, 3)
  torch.save({"model": state_dict}, tmp_path / "bad.pth")
  with pytest.raises(ValueError, match=r"'features\.0\.weight' has shape \(64, 4, 3, 3\)"):
    convert_weights.convert(str(tmp_path / "bad.pth"), str(tmp_path / "bad.npz"),
                            pretrained.MODEL_KINDS["vgg19"])
  (tmp_path / "text.pth").write_text("not a checkpoint")
  with pytest.raises(ValueError, match="not a weights-only PyTorch checkpoint"):
    convert_weights.read_state_dict(str(tmp_path / "text.pth"))

  # The command line: a small IResNet checkpoint is not an iresnet50 one.
  _, _, iresnet_directory = iresnet_release
  result = subprocess.run(
      [sys.executable, "-m", "data_prep.convert_weights", "--kind=iresnet50",
       f"--input={iresnet_directory / 'backbone.pth'}", f"--output={tmp_path / 'r50.npz'}"],
      capture_output=True, text=True, check=False)
  assert result.returncode != 0
  assert "--kind=iresnet50" in result.stderr
  assert "'layer1.1.bn1.running_mean' is missing" in result.stderr
  assert not (tmp_path / "r50.npz").exists()


def test_paper_size_shapes_and_parameter_counts():
  full_vgg = pretrained.MODEL_KINDS["vgg19"]
  images = jax.ShapeDtypeStruct((1, 512, 512, 3), jnp.float32)
  variables = jax.eval_shape(full_vgg.init, jax.random.key(0), images)
  with torch.device("meta"):
    torch_vgg = TorchVGG19()
    torch_iresnet = TorchIResNet(iresnet.STAGE_BLOCKS[100])
  assert parameter_count(variables["params"]) == 20_024_384
  assert parameter_count(variables["params"]) == sum(p.numel() for p in torch_vgg.parameters())
  features = jax.eval_shape(vgg.VGG19().apply, variables, images)
  assert [f.shape for f in features] == [
      (1, 512, 512, 64), (1, 256, 256, 128), (1, 128, 128, 256), (1, 64, 64, 512),
      (1, 32, 32, 512)]

  model = iresnet.iresnet(100)
  faces = jax.ShapeDtypeStruct((1, 112, 112, 3), jnp.float32)
  variables = jax.eval_shape(model.init, jax.random.key(0), faces)
  torch_parameters = sum(p.numel() for p in torch_iresnet.parameters())
  assert parameter_count(variables["params"]) == torch_parameters
  assert 65e6 < torch_parameters < 65.5e6
  assert parameter_count(variables["batch_stats"]) == sum(
      b.numel() for name, b in torch_iresnet.named_buffers() if "running" in name)
  embedding, stage_features = jax.eval_shape(model.apply, variables, faces)
  assert embedding.shape == (1, 512) and stage_features[-1].shape == (1, 7, 7, 512)
  with pytest.raises(ValueError, match="stages"):
    jax.eval_shape(iresnet.IResNet(stage_blocks=(3, 4, 14)).init, jax.random.key(0), faces)
  with pytest.raises(ValueError, match="relu9_9"):
    jax.eval_shape(vgg.VGG19(layers=("relu1_1", "relu9_9")).init, jax.random.key(0), images)
  # Larger frames are resized to 112x112 inside.
  embedding, _ = jax.eval_shape(model.apply, variables,
                                jax.ShapeDtypeStruct((2, 512, 512, 3), jnp.bfloat16))
  assert embedding.shape == (2, 512) and embedding.dtype == jnp.float32


def test_vgg_perceptual_loss(vgg_release):
  _, weights_path = vgg_release
  variables = pretrained.load_vgg19(weights_path)
  images = jnp.asarray(np.random.default_rng(2).uniform(-1, 1, (2, 32, 32, 3)), jnp.float32)
  noise = jnp.asarray(np.random.default_rng(3).normal(size=images.shape), jnp.float32)
  loss = jax.jit(perceptual.vgg_perceptual_loss, static_argnames="layer_weights")
  assert float(loss(variables, images, images)) == 0.0
  small, large = (float(loss(variables, images, images + scale * noise)) for scale in (0.05, 0.3))
  assert 0.0 < small < large
  weighted = loss(variables, images, images + 0.05 * noise, layer_weights=(2.0,) * 5)
  np.testing.assert_allclose(weighted, 2 * small, rtol=1e-5)
  gradient = jax.grad(loss, argnums=1)(variables, images + 0.05 * noise, images)
  assert np.isfinite(gradient).all() and np.abs(gradient).max() > 0
  with pytest.raises(ValueError, match="3 layer weights for 5 feature maps"):
    perceptual.vgg_perceptual_loss(variables, images, images, layer_weights=(1.0, 1.0, 1.0))


def test_identity_distance_and_face_perceptual_loss(iresnet_release):
  _, weights_path, _ = iresnet_release
  variables = pretrained.load_iresnet(weights_path, depth=SMALL_STAGE_BLOCKS)
  model = iresnet.IResNet(stage_blocks=SMALL_STAGE_BLOCKS)
  rng = np.random.default_rng(4)
  faces = jnp.asarray(rng.uniform(-1, 1, (2, 128, 128, 3)), jnp.float32)
  others = jnp.asarray(rng.uniform(-1, 1, (2, 128, 128, 3)), jnp.float32)
  embedding = jax.jit(perceptual.identity_embedding, static_argnames="model")
  same = embedding(variables, faces, model=model)
  assert same.shape == (2, 512) and same.dtype == jnp.float32
  np.testing.assert_allclose(jnp.linalg.norm(same, axis=-1), 1.0, rtol=1e-5)
  np.testing.assert_allclose(
      perceptual.identity_cosine_distance(same, embedding(variables, faces, model=model)), 0.0,
      atol=1e-6)
  distance = perceptual.identity_cosine_distance(same, embedding(variables, others, model=model))
  assert distance.shape == (2,) and np.all((distance > 0) & (distance <= 2))
  np.testing.assert_allclose(perceptual.identity_cosine_distance(same, -3 * same), 2.0, rtol=1e-6)

  face_loss = jax.jit(perceptual.face_perceptual_loss, static_argnames="model")
  assert float(face_loss(variables, faces, faces, model=model)) == 0.0
  assert float(face_loss(variables, faces, others, model=model)) > 0.0
