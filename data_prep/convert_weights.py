"""Converts a released PyTorch checkpoint of a loss network into the `.npz` weight file JAX loads.

  python -m data_prep.convert_weights --kind=vgg19 --input=vgg19-dcbb9e9d.pth --output=vgg19.npz
  python -m data_prep.convert_weights --kind=iresnet100 \
      --input=ms1mv3_arcface_r100_fp16/backbone.pth --output=arcface_r100.npz
  python -m data_prep.convert_weights --kind=syncnet --input=syncnet_v2.model --output=syncnet.npz

Kinds (`vasa_jax.models.pretrained.MODEL_KINDS`):
  vgg19            torchvision's `vgg19` ImageNet weights (only `features.*` is kept);
  iresnet{18,34,50,100,200}  insightface `arcface_torch` backbones (`backbone.pth`);
  syncnet          joonson/syncnet_python's `syncnet_v2.model` (`netcnnaud.*`, `netfcaud.*`,
                   `netcnnlip.*`, `netfclip.*`, BatchNorm running statistics included).
The checkpoint may be a raw state_dict or one wrapped as {"state_dict": ...} or {"model": ...};
"module." prefixes (DataParallel) are stripped. The output keeps exactly the tensors the Flax model
needs, under their PyTorch names, in PyTorch layout, as float32; `vasa_jax.models.pretrained` does the
layout conversion when loading. A checkpoint of another kind is refused, naming the tensors it
lacks or whose shape differs. torch is needed by this script only.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Mapping, Sequence

from absl import app
from absl import flags
import flax.linen as nn
import numpy as np

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
  """The tensors of a PyTorch checkpoint file as float32 numpy arrays, keyed by state_dict name."""
  import torch  # pylint: disable=g-import-not-at-top  (only this script needs torch)

  if not os.path.isfile(path):
    raise FileNotFoundError(f"checkpoint {path!r} does not exist")
  try:
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
  except Exception as e:  # torch raises many types for a file that is not a checkpoint
    raise ValueError(f"{path} is not a weights-only PyTorch checkpoint: {e}") from e
  state_dict = _unwrap_state_dict(checkpoint, path)
  return {name: tensor.detach().to(torch.float32).numpy()
          for name, tensor in state_dict.items()
          if isinstance(tensor, torch.Tensor) and tensor.is_floating_point()}


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
  tensors = pretrained.select_torch_tensors(read_state_dict(input_path), model, input_path)
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
