"""The package layout: one importable package, imports in one direction, a light install.

`vasa_jax` is the library; `data_prep/` (command-line programs), `configs/` (experiment files),
`experiments/` and `tests/` import it, never the reverse, and setup.py installs `vasa_jax` alone.
"""

import ast
import os
import pathlib
from unittest import mock

import setuptools

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUTSIDE_TOP_LEVEL = ("data_prep", "configs", "experiments", "tests")


def imported_top_levels(path: pathlib.Path) -> set[str]:
  """Top-level names of every module `path` imports (any nesting, any import form)."""
  names = set()
  for node in ast.walk(ast.parse(path.read_text(), str(path))):
    if isinstance(node, ast.Import):
      names.update(alias.name.split(".")[0] for alias in node.names)
    elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
      names.add(node.module.split(".")[0])
  return names


def setup_arguments() -> dict:
  """The keyword arguments setup.py passes to `setuptools.setup`."""
  with mock.patch.object(setuptools, "setup") as setup:
    cwd = os.getcwd()
    try:
      os.chdir(ROOT)
      exec(compile((ROOT / "setup.py").read_text(), "setup.py", "exec"), {"__name__": "__main__"})
    finally:
      os.chdir(cwd)
  return setup.call_args.kwargs


def test_the_package_imports_nothing_outside_it():
  offenders = {}
  for path in sorted((ROOT / "vasa_jax").rglob("*.py")):
    bad = imported_top_levels(path) & set(OUTSIDE_TOP_LEVEL)
    if bad:
      offenders[str(path.relative_to(ROOT))] = sorted(bad)
  assert not offenders, f"vasa_jax imports {offenders}"


def test_command_line_programs_and_configs_import_the_package():
  for folder in ("data_prep", "configs"):
    for path in sorted((ROOT / folder).glob("*.py")):
      if path.name == "__init__.py":
        continue
      names = imported_top_levels(path)
      assert "vasa_jax" in names, f"{path.relative_to(ROOT)} does not import vasa_jax"
      assert not names & {"data_prep", "experiments", "tests"}, (
          f"{path.relative_to(ROOT)} imports {sorted(names & set(OUTSIDE_TOP_LEVEL))}")


def test_the_layout_checker_sees_a_forbidden_import(tmp_path):
  module = tmp_path / "module.py"
  module.write_text("def f():\n  from data_prep import prepare\n  import configs.latent\n")
  assert {"data_prep", "configs"} <= imported_top_levels(module)


def test_setup_installs_the_package_alone_and_the_first_command_needs_no_torch():
  arguments = setup_arguments()
  packages = arguments["packages"]
  assert "vasa_jax" in packages and "vasa_jax.data" in packages
  assert all(name == "vasa_jax" or name.startswith("vasa_jax.") for name in packages), packages
  requirement_names = [requirement.split(";")[0].split("<")[0].split(">")[0].split("=")[0].strip()
                       for requirement in arguments["install_requires"]]
  assert "torch" not in requirement_names
  assert any(requirement.startswith("torch") for requirement in arguments["extras_require"]["test"])
  # `vasa_jax.sample` crops faces with the dlib tracker, so it is a core dependency.
  assert "dlib-bin" in requirement_names
