"""Variables of the frozen pretrained networks from local weight files: the loss networks (VGG19,
ArcFace IResNet, MPIIGaze's gaze LeNet), the evaluation networks (SyncNet, ...) and the emotion
classifier.

Nothing is downloaded. A weight file is the `.npz` that `python -m data_prep.convert_weights`
writes from a released PyTorch checkpoint: its keys are the PyTorch state_dict names
("features.0.weight", "layer2.3.bn1.running_var", ...) and its values numpy arrays in PyTorch
layout. A file may hold more tensors than the model needs (they are ignored).

Name mapping, Flax variable path -> PyTorch name: module names `x_N` become `x.N` and the path is
joined with dots; the leaf becomes kernel/scale/negative_slope -> weight, bias -> bias,
batch_stats mean/var -> running_mean/running_var. Conv kernels are stored HWIO in Flax and OIHW in
PyTorch, 3D conv kernels THWIO against OITHW, dense kernels [in, out] against [out, in].

Every tensor the model needs is checked against the model's own `jax.eval_shape` init: a missing
or mis-shaped tensor raises ValueError naming it with both shapes; a missing file raises
FileNotFoundError. The returned variables have the structure `model.init` gives (parameters keep
their logical-axis `nn.Partitioned` boxes), holding float32 numpy arrays: place them with
`jax.device_put` (or the trainer's shardings).
"""

from __future__ import annotations

import functools
import os
import re
from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vasa_jax.models import emotion
from vasa_jax.models import gaze
from vasa_jax.models import i3d
from vasa_jax.models import inception
from vasa_jax.models import iresnet
from vasa_jax.models import syncnet
from vasa_jax.models import vgg

# Converter kinds: the model whose tensors a released checkpoint of that kind must hold.
MODEL_KINDS = {
    "vgg19": vgg.VGG19(layers=(vgg.VGG19_LAYER_NAMES[-1],)),  # all 16 convs
    **{f"iresnet{depth}": iresnet.iresnet(depth) for depth in sorted(iresnet.STAGE_BLOCKS)},
    "syncnet": syncnet.SyncNet(),
    "i3d": i3d.I3D(),
    "inception": inception.FIDInceptionV3(),
    "gaze": gaze.GazeLeNet(),
    "emotion": emotion.EmotionNet(),
}
# Flax leaf name -> PyTorch state_dict leaf name.
_TORCH_LEAF_NAMES = {
    "kernel": "weight",
    "scale": "weight",
    "negative_slope": "weight",
    "bias": "bias",
    "mean": "running_mean",
    "var": "running_var",
}
# Most problems listed in one error message.
_MAX_LISTED_PROBLEMS = 8


def _is_box(value: Any) -> bool:
  return isinstance(value, nn.meta.AxisMetadata)


def _unboxed(value: Any) -> Any:
  return value.unbox() if _is_box(value) else value


@functools.lru_cache(maxsize=32)
def abstract_variables(model: nn.Module) -> Any:
  """The shapes and dtypes of `model`'s variables (boxed as `model.init` returns them).

  The model is initialised on its `example_inputs()` where it defines them, else on one image
  (traced once per model configuration: modules are hashable by their fields).
  """
  if hasattr(model, "example_inputs"):
    inputs = model.example_inputs()
  else:
    inputs = (jax.ShapeDtypeStruct((1, iresnet.INPUT_SIZE, iresnet.INPUT_SIZE, 3), jnp.float32),)
  return jax.eval_shape(model.init, jax.random.key(0), *inputs)


def _torch_name(path: Sequence[str], model: nn.Module) -> str:
  """("params", "layer1_0", "conv1", "kernel") -> "layer1.0.conv1.weight".

  Module names ending in `_N` are PyTorch `nn.Sequential` / `nn.ModuleList` entries `.N`, unless
  the model keeps its names as they are (`KEEPS_TORCH_NAMES`, for torch names such as
  torchvision's `branch7x7_1`).
  """
  modules = list(path[1:-1])
  if not getattr(model, "KEEPS_TORCH_NAMES", False):
    modules = [re.sub(r"_(\d+)$", r".\1", name) for name in modules]
  return ".".join(modules + [_TORCH_LEAF_NAMES[path[-1]]])


def _torch_layout_shape(flax_shape: tuple[int, ...], leaf_name: str) -> tuple[int, ...]:
  """The PyTorch shape of a Flax variable: kernels HWIO -> OIHW, THWIO -> OITHW and
  [in, out] -> [out, in]."""
  if leaf_name == "kernel" and len(flax_shape) == 4:
    return tuple(flax_shape[i] for i in (3, 2, 0, 1))
  if leaf_name == "kernel" and len(flax_shape) == 5:
    return tuple(flax_shape[i] for i in (4, 3, 0, 1, 2))
  if leaf_name == "kernel" and len(flax_shape) == 2:
    return flax_shape[::-1]
  return tuple(flax_shape)


def _from_torch_layout(tensor: np.ndarray, leaf_name: str) -> np.ndarray:
  if leaf_name == "kernel" and tensor.ndim == 4:
    return np.transpose(tensor, (2, 3, 1, 0))
  if leaf_name == "kernel" and tensor.ndim == 5:
    return np.transpose(tensor, (2, 3, 4, 1, 0))
  if leaf_name == "kernel" and tensor.ndim == 2:
    return tensor.T
  return tensor


def _to_torch_layout(value: np.ndarray, leaf_name: str) -> np.ndarray:
  if leaf_name == "kernel" and value.ndim == 4:
    return np.transpose(value, (3, 2, 0, 1))
  if leaf_name == "kernel" and value.ndim == 5:
    return np.transpose(value, (4, 3, 0, 1, 2))
  if leaf_name == "kernel" and value.ndim == 2:
    return value.T
  return value


def _variable_leaves(model: nn.Module) -> tuple[list[tuple[tuple[str, ...], Any]], Any]:
  """([(flax path, abstract leaf)], treedef) of the model's variables, boxes kept as leaves."""
  flat, treedef = jax.tree_util.tree_flatten_with_path(abstract_variables(model),
                                                       is_leaf=_is_box)
  return [(tuple(key.key for key in path), leaf) for path, leaf in flat], treedef


def expected_torch_shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
  """PyTorch state_dict name -> PyTorch-layout shape of every tensor `model` needs."""
  leaves, _ = _variable_leaves(model)
  return {_torch_name(path, model): _torch_layout_shape(_unboxed(leaf).shape, path[-1])
          for path, leaf in leaves}


def select_torch_tensors(tensors: Mapping[str, Any], model: nn.Module,
                         source: str) -> dict[str, np.ndarray]:
  """The tensors `model` needs out of a state_dict-like mapping, each checked for its shape.

  Args:
    tensors: PyTorch state_dict name -> array-like in PyTorch layout.
    model: the Flax module the tensors are for.
    source: where the tensors come from (a path), for error messages.

  Returns:
    name -> float32 numpy array, for exactly the names of `expected_torch_shapes(model)`.

  Raises:
    ValueError: a needed tensor is missing or has another shape; the message names each such
      tensor with its shape in the file and the shape the model needs.
  """
  selected, problems = {}, []
  for name, shape in expected_torch_shapes(model).items():
    if name not in tensors:
      problems.append(f"tensor {name!r} is missing (the model needs shape {shape})")
      continue
    tensor = np.asarray(tensors[name])
    if tensor.shape != shape:
      problems.append(f"tensor {name!r} has shape {tensor.shape} in the file but the model "
                      f"needs {shape}")
      continue
    selected[name] = tensor.astype(np.float32)
  if problems:
    listed = "; ".join(problems[:_MAX_LISTED_PROBLEMS])
    more = len(problems) - _MAX_LISTED_PROBLEMS
    raise ValueError(
        f"{source} does not hold the weights of {type(model).__name__} "
        f"({len(problems)} problem(s)): {listed}{f'; and {more} more' if more > 0 else ''}. "
        "Is it the checkpoint of this network and depth?")
  return selected


def variables_from_torch_tensors(tensors: Mapping[str, Any], model: nn.Module,
                                 source: str) -> Any:
  """Flax variables of `model` (boxed like `model.init`'s) from PyTorch-named tensors."""
  selected = select_torch_tensors(tensors, model, source)
  leaves, treedef = _variable_leaves(model)
  values = []
  for path, leaf in leaves:
    value = _from_torch_layout(selected[_torch_name(path, model)], path[-1])
    value = np.ascontiguousarray(value, dtype=_unboxed(leaf).dtype)
    values.append(leaf.replace_boxed(value) if _is_box(leaf) else value)
  return jax.tree_util.tree_unflatten(treedef, values)


def torch_tensors_from_variables(variables: Any, model: nn.Module) -> dict[str, np.ndarray]:
  """The inverse of `variables_from_torch_tensors`: PyTorch name -> float32 array in PyTorch
  layout, e.g. to save a network trained here as a weight file its loader reads."""
  flat = jax.tree_util.tree_flatten_with_path(nn.meta.unbox(variables))[0]
  values = {tuple(key.key for key in path): np.asarray(leaf) for path, leaf in flat}
  tensors = {}
  for path, leaf in _variable_leaves(model)[0]:
    value = _to_torch_layout(values[path].astype(np.float32), path[-1])
    tensors[_torch_name(path, model)] = np.ascontiguousarray(value)
  return tensors


def save_variables(path: str, variables: Any, model: nn.Module) -> None:
  """Writes `variables` of `model` as a weight file `load_variables` reads (.npz)."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, "wb") as file:  # np.savez would append ".npz" to other names
    np.savez(file, **torch_tensors_from_variables(variables, model))


def load_variables(path: str, model: nn.Module) -> Any:
  """Variables of `model` from a converted `.npz` weight file (see the module docstring)."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f"weight file {path!r} does not exist (convert the released "
                            "checkpoint with `python -m data_prep.convert_weights`)")
  with np.load(path, allow_pickle=False) as archive:
    tensors = {name: archive[name] for name in archive.files}
  return variables_from_torch_tensors(tensors, model, path)


def load_vgg19(path: str, layers: Sequence[str] = vgg.PERCEPTUAL_LAYERS) -> Any:
  """Variables of `vgg.VGG19(layers=layers)` from a converted torchvision vgg19 weight file.

  Only the convs up to the deepest of `layers` are loaded; use the same `layers` in the module.
  """
  return load_variables(path, vgg.VGG19(layers=tuple(layers)))


def load_iresnet(path: str, depth: int | Sequence[int] = 100) -> Any:
  """Variables of an ArcFace IResNet from a converted arcface_torch backbone weight file.

  Args:
    path: the `.npz` weight file.
    depth: a released depth (18, 34, 50, 100, 200), or the blocks of its four stages for a
      custom IResNet (`iresnet.IResNet(stage_blocks=...)`).
  """
  if isinstance(depth, int):
    model = iresnet.iresnet(depth)
  else:
    model = iresnet.IResNet(stage_blocks=tuple(depth))
  return load_variables(path, model)


def load_syncnet(path: str, width: float = 1.0) -> Any:
  """Variables of `syncnet.SyncNet(width=width)` from a converted syncnet_python weight file
  (`python -m data_prep.convert_weights --kind=syncnet --input=syncnet_v2.model ...`)."""
  return load_variables(path, syncnet.SyncNet(width=width))


def load_i3d(path: str, width: float = 1.0) -> Any:
  """Variables of `i3d.I3D(width=width)` from a converted I3D weight file
  (`python -m data_prep.convert_weights --kind=i3d --input=i3d_torchscript.pt ...`)."""
  return load_variables(path, i3d.I3D(width=width))


def load_inception(path: str) -> Any:
  """Variables of `inception.FIDInceptionV3()` from a converted pytorch-fid weight file
  (`python -m data_prep.convert_weights --kind=inception
  --input=pt_inception-2015-12-05-6726825d.pth ...`)."""
  return load_variables(path, inception.FIDInceptionV3())


def load_gaze(path: str) -> Any:
  """Variables of `gaze.GazeLeNet()` from a converted MPIIGaze LeNet weight file
  (`python -m data_prep.convert_weights --kind=gaze --input=checkpoint.pth ...`, a state dict
  with conv1.*, conv2.*, fc1.*, fc2.* as hysts/pytorch_mpiigaze's lenet saves it)."""
  return load_variables(path, gaze.GazeLeNet())


def load_emotion(path: str) -> Any:
  """Variables of `emotion.EmotionNet()` from a converted HSEmotion weight file
  (`python -m data_prep.convert_weights --kind=emotion --input=enet_b0_8_best_afew_state.pt ...`)."""
  return load_variables(path, emotion.EmotionNet())
