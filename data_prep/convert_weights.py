"""Converts a released PyTorch checkpoint of a pretrained network into the `.npz` file JAX loads.

  python -m data_prep.convert_weights --kind=vgg19 --input=vgg19-dcbb9e9d.pth --output=vgg19.npz
  python -m data_prep.convert_weights --kind=iresnet100 \
      --input=ms1mv3_arcface_r100_fp16/backbone.pth --output=arcface_r100.npz
  python -m data_prep.convert_weights --kind=syncnet --input=syncnet_v2.model --output=syncnet.npz
  python -m data_prep.convert_weights --kind=i3d --input=i3d_torchscript.pt --output=i3d.npz
  python -m data_prep.convert_weights --kind=inception \
      --input=pt_inception-2015-12-05-6726825d.pth --output=inception.npz
  python -m data_prep.convert_weights --kind=gaze --input=mpiigaze_lenet.pth --output=gaze.npz
  python -m data_prep.convert_weights --kind=emotion --input=enet_b0_8_best_afew_state.pt \
      --output=emotion.npz

Kinds (`vasa_jax.models.pretrained.MODEL_KINDS`):
  vgg19            torchvision's `vgg19` ImageNet weights (only `features.*` is kept);
  iresnet{18,34,50,100,200}  insightface `arcface_torch` backbones (`backbone.pth`);
  syncnet          joonson/syncnet_python's `syncnet_v2.model` (`netcnnaud.*`, `netfcaud.*`,
                   `netcnnlip.*`, `netfclip.*`, BatchNorm running statistics included);
  i3d              StyleGAN-V's `i3d_torchscript.pt` (the TF-Hub i3d-kinetics-400 port FVD uses),
                   read from the archive's data.pkl without running its TorchScript code; its
                   convs are matched to the network's in forward order (`i3d_tensors`), so other
                   ports of the TF-Hub network (state dicts or TorchScript) convert as well;
  inception        pytorch-fid's `pt_inception-2015-12-05-6726825d.pth` (FID's InceptionV3);
  gaze             MPIIGaze's LeNet gaze estimator (Zhang et al. 2015) as hysts/pytorch_mpiigaze
                   trains and saves it (`conv1.*`, `conv2.*`, `fc1.*` 3600 -> 500, `fc2.*`
                   502 -> 2), for the stage-1 gaze loss (`config.pretrained.gaze`).
  emotion          HSEmotion's `enet_b0_8_best_afew`, `enet_b0_8_best_vgaf` or `enet_b0_8_va_mtl`
                   (EfficientNet-B0, 8 expressions). HSEmotion releases them as whole pickled
                   models, which this script refuses to unpickle: turn one into a state dict once
                   with torch and timm (docs/data.md, "Emotion scores"). `classifier.weight` is
                   read as `classifier.0.weight`, and of `va_mtl`'s 10 outputs the first 8 (the
                   expressions; the last two are valence and arousal) are kept (`emotion_tensors`).
The checkpoint may be a raw state_dict or one wrapped as {"state_dict": ...} or {"model": ...};
"module." prefixes (DataParallel) are stripped. The output keeps exactly the tensors the Flax model
needs, under their PyTorch names, in PyTorch layout, as float32; `vasa_jax.models.pretrained` does the
layout conversion when loading. A checkpoint of another kind is refused, naming the tensors it
lacks or whose shape differs. torch is needed by this script only (not for TorchScript archives).
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import sys
import zipfile
from typing import Any, Mapping, Sequence

from absl import app
from absl import flags
import flax.linen as nn
import numpy as np

from vasa_jax.models import emotion
from vasa_jax.models import i3d
from vasa_jax.models import pretrained

# Keys under which training scripts wrap a state_dict.
_WRAPPER_KEYS = ("state_dict", "model")
_DATA_PARALLEL_PREFIX = "module."


def _unwrap_state_dict(checkpoint: Any, path: str) -> Mapping[str, Any]:
  """The state_dict inside a checkpoint, with "module." prefixes removed."""
  while isinstance(checkpoint, Mapping):
    wrapped = [key for key in _WRAPPER_KEYS if isinstance(checkpoint.get(key), Mapping)]
    if not wrapped:
      break
    checkpoint = checkpoint[wrapped[0]]
  if not isinstance(checkpoint, Mapping) or not checkpoint:
    raise ValueError(f"{path} is not a PyTorch state_dict (found {type(checkpoint).__name__})")
  return {name.removeprefix(_DATA_PARALLEL_PREFIX): tensor for name, tensor in checkpoint.items()}


def read_state_dict(path: str) -> dict[str, np.ndarray]:
  """The tensors of a PyTorch checkpoint file as float32 numpy arrays, keyed by state_dict name.

  A TorchScript archive (`torch.jit.save`) is read by `read_torchscript_tensors`, without
  executing its code; anything else by `torch.load(..., weights_only=True)`.
  """
  if not os.path.isfile(path):
    raise FileNotFoundError(f"checkpoint {path!r} does not exist")
  if _torchscript_data_pickle(path) is not None:
    return {name: tensor.astype(np.float32)
            for name, tensor in read_torchscript_tensors(path).items()
            if np.issubdtype(tensor.dtype, np.floating)}
  import torch  # pylint: disable=g-import-not-at-top  (only this script needs torch)

  try:
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
  except Exception as e:  # torch raises many types for a file that is not a checkpoint
    first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    raise ValueError(
        f"{path} is not a weights-only PyTorch checkpoint (a whole pickled model is refused: "
        f"save its state_dict() once with torch, see docs/data.md): {first_line}") from e
  state_dict = _unwrap_state_dict(checkpoint, path)
  return {name: tensor.detach().to(torch.float32).numpy()
          for name, tensor in state_dict.items()
          if isinstance(tensor, torch.Tensor) and tensor.is_floating_point()}


# TorchScript archives -------------------------------------------------------------------------

# numpy dtypes of the storage classes a TorchScript pickle names.
_STORAGE_DTYPES = {"FloatStorage": np.float32, "DoubleStorage": np.float64,
                   "HalfStorage": np.float16, "LongStorage": np.int64, "IntStorage": np.int32,
                   "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8,
                   "BoolStorage": np.bool_}
# Helpers a TorchScript pickle calls to rebuild lists; each returns its first argument.
_LIST_BUILDERS = ("build_intlist", "build_doublelist", "build_boollist", "build_tensorlist",
                  "build_genericlist", "restore_type_tag")


def _torchscript_data_pickle(path: str) -> str | None:
  """The name of a TorchScript archive's `<archive>/data.pkl` (None for other files)."""
  if not zipfile.is_zipfile(path):
    return None
  with zipfile.ZipFile(path) as archive:
    names = archive.namelist()
  pickles = [name for name in names if name.endswith("/data.pkl") and name.count("/") == 1]
  prefix = pickles[0][:-len("data.pkl")] if pickles else None
  if prefix is None or not any(name.startswith(prefix + "code/") for name in names):
    return None  # a zip checkpoint of torch.save, not TorchScript
  return pickles[0]


class _ScriptModule:
  """Stands in for a TorchScript class: keeps the attribute dict its pickle restores."""

  def __setstate__(self, state: Mapping[str, Any]) -> None:
    self.attributes = dict(state)


def _rebuild_tensor(storage: np.ndarray, offset: int, size: Sequence[int],
                    stride: Sequence[int], *_unused: Any) -> np.ndarray:
  """`torch._utils._rebuild_tensor_v2` on a numpy storage (element offsets and strides)."""
  if not size:
    return np.array(storage[offset])
  item = storage.itemsize
  return np.lib.stride_tricks.as_strided(storage[offset:], shape=tuple(size),
                                         strides=tuple(s * item for s in stride)).copy()


class _TorchScriptUnpickler(pickle.Unpickler):
  """Rebuilds modules as attribute dicts and tensors as numpy arrays; refuses anything else."""

  def __init__(self, data: bytes, archive: zipfile.ZipFile, prefix: str, path: str):
    super().__init__(io.BytesIO(data))
    self._archive, self._prefix, self._path = archive, prefix, path

  def find_class(self, module: str, name: str) -> Any:
    if module == "__torch__" or module.startswith("__torch__."):
      return type(name, (_ScriptModule,), {})
    if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
      return _rebuild_tensor
    if module == "torch" and name in _STORAGE_DTYPES:
      return _STORAGE_DTYPES[name]
    if (module, name) == ("collections", "OrderedDict"):
      return collections.OrderedDict
    if module == "torch.jit._pickle" and name in _LIST_BUILDERS:
      return lambda value, *_: value
    raise pickle.UnpicklingError(f"{self._path}: refusing to load {module}.{name} (only modules "
                                 "and tensors are read from a TorchScript archive)")

  def persistent_load(self, pid: Any) -> np.ndarray:
    kind, dtype, key = pid[0], pid[1], pid[2]
    if kind != "storage":
      raise pickle.UnpicklingError(f"{self._path}: unknown persistent id {pid!r}")
    return np.frombuffer(self._archive.read(f"{self._prefix}data/{key}"), dtype=dtype)


def read_torchscript_tensors(path: str) -> dict[str, np.ndarray]:
  """Parameters and buffers of a TorchScript archive in module order, named like a state_dict
  ("features.0.conv.weight"), read from its data.pkl without running any of its code."""
  data_pickle = _torchscript_data_pickle(path)
  if data_pickle is None:
    raise ValueError(f"{path} is not a TorchScript archive")
  prefix = data_pickle[:-len("data.pkl")]
  with zipfile.ZipFile(path) as archive:
    try:
      root = _TorchScriptUnpickler(archive.read(data_pickle), archive, prefix, path).load()
    except (pickle.UnpicklingError, EOFError, KeyError, ValueError) as e:
      raise ValueError(f"{path}: cannot read its TorchScript data: {e}") from e
  tensors: dict[str, np.ndarray] = {}

  def collect(module: _ScriptModule, name: str) -> None:
    for attribute, value in getattr(module, "attributes", {}).items():
      full_name = f"{name}.{attribute}" if name else attribute
      if isinstance(value, np.ndarray):
        tensors[full_name] = value
      elif isinstance(value, _ScriptModule):
        collect(value, full_name)

  collect(root, "")
  return tensors


# I3D: tensors matched in forward order -----------------------------------------------------------


def i3d_tensors(tensors: Mapping[str, np.ndarray], model: i3d.I3D,
                source: str) -> dict[str, np.ndarray]:
  """An I3D checkpoint's tensors under the Flax model's names, matched by order.

  Ports of the TF-Hub I3D name their modules in many ways, so they are matched by position: the
  tensors are grouped by the module that owns them (the name up to the last dot), in file order;
  a group with a 5-D `weight` is a conv, one with `running_mean` and `running_var` the BatchNorm of
  the conv before it. The convs must come in the network's forward order (`i3d.unit_order`) with
  its channel counts and kernel sizes. A missing conv bias is written as zeros, a missing
  BatchNorm scale as ones (TF's I3D has neither).

  Raises:
    ValueError: the convs differ from the network's in number, order or shape (the message names
      the file's tensor), or a BatchNorm is missing or does not follow a conv.
  """
  groups: dict[str, dict[str, np.ndarray]] = {}
  for name, tensor in tensors.items():
    owner, _, leaf = name.rpartition(".")
    groups.setdefault(owner, {})[leaf] = np.asarray(tensor, np.float32)
  found: list[dict[str, Any]] = []
  for owner, leaves in groups.items():
    if "weight" in leaves and leaves["weight"].ndim == 5:
      found.append({"owner": owner, "conv": leaves, "bn": None})
    elif "running_mean" in leaves and "running_var" in leaves:
      if not found or found[-1]["bn"] is not None:
        raise ValueError(f"{source}: BatchNorm {owner!r} does not follow a 3D conv")
      found[-1]["bn"] = leaves
  expected = i3d.unit_order(model.width, model.num_classes)
  if len(found) != len(expected):
    raise ValueError(f"{source} holds {len(found)} 3D convs; I3D has {len(expected)}")
  output = {}
  for (path, channels, kernel, has_batch_norm), unit in zip(expected, found):
    name, weight = path.replace("/", "."), unit["conv"]["weight"]
    if weight.shape[0] != channels or tuple(weight.shape[2:]) != tuple(kernel):
      raise ValueError(
          f"{source}: tensor {unit['owner'] + '.weight'!r} has shape {weight.shape}, but I3D's "
          f"{path} needs {channels} output channels and kernel {tuple(kernel)} (are the convs "
          "in the network's forward order?)")
    output[f"{name}.conv_3d.weight"] = weight
    output[f"{name}.conv_3d.bias"] = unit["conv"].get("bias", np.zeros(channels, np.float32))
    batch_norm = unit["bn"]
    if not has_batch_norm:
      if batch_norm is not None:
        raise ValueError(f"{source}: I3D's {path} has no BatchNorm, the file has one")
      continue
    if batch_norm is None:
      raise ValueError(f"{source}: tensor {unit['owner'] + '.weight'!r} ({path}) has no "
                       "BatchNorm after it")
    output[f"{name}.batch_norm.weight"] = batch_norm.get("weight", np.ones(channels, np.float32))
    output[f"{name}.batch_norm.bias"] = batch_norm.get("bias", np.zeros(channels, np.float32))
    output[f"{name}.batch_norm.running_mean"] = batch_norm["running_mean"]
    output[f"{name}.batch_norm.running_var"] = batch_norm["running_var"]
  return output


# Emotion: the classifier's names and rows -----------------------------------------------------


def emotion_tensors(tensors: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  """An HSEmotion state dict with its classifier as `EmotionNet` reads it.

  A plain `classifier.{weight,bias}` (a Linear instead of HSEmotion's nn.Sequential) is renamed
  `classifier.0.*`; a classifier of 10 outputs (`enet_b0_8_va_mtl`: 8 expressions, valence,
  arousal) keeps its first 8 rows. Other shapes are left for the shape check to name.
  """
  output = dict(tensors)
  for leaf in ("weight", "bias"):
    if f"classifier.{leaf}" in output and f"classifier.0.{leaf}" not in output:
      output[f"classifier.0.{leaf}"] = output.pop(f"classifier.{leaf}")
    name = f"classifier.0.{leaf}"
    if name in output and np.shape(output[name])[0] == emotion.NUM_EMOTIONS + 2:
      output[name] = np.asarray(output[name])[:emotion.NUM_EMOTIONS]
  return output


def convert(input_path: str, output_path: str, model: nn.Module) -> dict[str, np.ndarray]:
  """Converts the checkpoint `input_path` into the weight file `output_path` (.npz) for `model`.

  Args:
    input_path: the PyTorch checkpoint.
    output_path: the .npz to write (its directory is created).
    model: the Flax module the weights are for (`pretrained.MODEL_KINDS[kind]` for a release).

  Returns:
    The tensors written (PyTorch name -> float32 array).

  Raises:
    ValueError: the file is not a checkpoint, or lacks a tensor `model` needs or has it in another
      shape (the message names it).
    FileNotFoundError: `input_path` does not exist.
  """
  tensors = read_state_dict(input_path)
  if isinstance(model, i3d.I3D):
    tensors = i3d_tensors(tensors, model, input_path)
  if isinstance(model, emotion.EmotionNet):
    tensors = emotion_tensors(tensors)
  tensors = pretrained.select_torch_tensors(tensors, model, input_path)
  os.makedirs(os.path.dirname(os.path.abspath(output_path)), exist_ok=True)
  with open(output_path, "wb") as output_file:  # np.savez would append ".npz" to other names
    np.savez(output_file, **tensors)
  return tensors


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  values = flags.FLAGS
  try:
    tensors = convert(values.input, values.output, pretrained.MODEL_KINDS[values.kind])
  except (ValueError, FileNotFoundError) as e:
    sys.exit(f"error (--kind={values.kind}): {e}")
  count = sum(tensor.size for tensor in tensors.values())
  print(f"wrote {values.output}: {len(tensors)} tensors, {count:,} values")


def _define_flags() -> None:
  flags.DEFINE_enum("kind", None, sorted(pretrained.MODEL_KINDS), "Which network the "
                    "checkpoint holds.")
  flags.DEFINE_string("input", None, "The released PyTorch checkpoint (.pth).")
  flags.DEFINE_string("output", None, "The .npz weight file to write.")
  flags.mark_flags_as_required(["kind", "input", "output"])


if __name__ == "__main__":
  _define_flags()
  app.run(main)
