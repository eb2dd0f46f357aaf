"""Loads a script of experiments/ as a module (experiments/ is not a package) for its tests."""

import importlib.util
import os
import types

EXPERIMENTS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                               "experiments")


def load(name: str) -> types.ModuleType:
  """experiments/`name`.py, executed as a fresh module."""
  spec = importlib.util.spec_from_file_location(name, os.path.join(EXPERIMENTS_DIR, name + ".py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module
