"""Config files by path: `configs/latent.py:tiny` -> the ConfigDict its `get_config("tiny")` makes.

The same spelling as `--config=` of `python -m vasa_jax.train` (ml_collections' config flags),
for programs that take several configs or a default one (`vasa_jax.demo`, the parameter counts of
`vasa_jax.models.autoencoder`). The package never imports the repository's `configs/` folder: it
is handed a path.
"""

from __future__ import annotations

import ast
import importlib.util
import os
from typing import Sequence

import ml_collections

# The repository checkout this package lives in (an editable install or a clone on sys.path);
# its `configs/` folder holds the experiment files.
REPOSITORY_DIR = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class ConfigFileError(ValueError):
  """A config spec names no readable file or its `get_config` refuses the argument."""


def default_path(relative: str) -> str:
  """`relative` (e.g. "configs/latent.py") inside the repository checkout, if it is there;
  otherwise as given (relative to the working directory)."""
  candidate = os.path.join(REPOSITORY_DIR, relative)
  return candidate if os.path.exists(candidate) else relative


def load(spec: str) -> ml_collections.ConfigDict:
  """`path[:argument]` -> `get_config(argument)` of the file at `path` (argument None if absent)."""
  path, _, argument = spec.partition(":")
  if not os.path.isfile(path):
    raise ConfigFileError(f"config file {path!r} does not exist")
  module_spec = importlib.util.spec_from_file_location(
      "vasa_jax_config_" + os.path.splitext(os.path.basename(path))[0], path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  if not hasattr(module, "get_config"):
    raise ConfigFileError(f"config file {path!r} defines no get_config(arg)")
  try:
    return module.get_config(argument or None)
  except ValueError as error:
    raise ConfigFileError(f"{spec}: {error}") from error


def apply_overrides(config: ml_collections.ConfigDict, overrides: Sequence[str]) -> None:
  """Sets each `FIELD=VALUE` of `overrides` (a dotted field path, a Python literal) in `config`;
  a field the config lacks is a ValueError naming it (the experiments' `--set` flag)."""
  for override in overrides:
    field, _, value = override.partition("=")
    parent = config
    *path, leaf = field.split(".")
    for name in path:
      parent = parent[name]
    if leaf not in parent:
      raise ValueError(f"--set {override!r}: the config has no field {field!r}")
    parent[leaf] = ast.literal_eval(value)
