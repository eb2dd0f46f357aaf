"""Every notebook in notebooks/ runs top to bottom (nbclient) at tiny settings, so none can rot.

Each notebook has one cell tagged `parameters`; `with_parameters` appends the test's values to
it, papermill-style (a name the cell does not define is an error). The install cell (tagged
`colab-install`) does its work only inside Colab, so here it only prints the working directory.
The kernels run this interpreter (a kernelspec written to a temporary directory) from the
repository root, with one CPU device as a user has (not the 8 simulated devices of the other
tests) and a persistent compilation cache shared by the three notebooks and their child
processes: the quick demo the quickstart runs compiles the programs that the inference notebook
and the training notebook (at the quick demo's step counts) then reuse.
"""

import ast
import copy
import json
import os
import re

import av
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager
from ipykernel import kernelspec as ipykernel_kernelspec
import nbclient
import nbformat
import pytest

from vasa_jax import demo
from vasa_jax.data import records
from vasa_jax.models import audio as audio_lib
from vasa_jax.training import checkpoint

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = ("quickstart", "inference", "training")
KERNEL_NAME = "vasa_jax_notebook_test"
CELL_TIMEOUT_S = 1800  # the quick demo is one cell


def read_notebook(name: str) -> nbformat.NotebookNode:
  return nbformat.read(os.path.join(REPO, "notebooks", f"{name}.ipynb"), as_version=4)


def tagged_cells(notebook: nbformat.NotebookNode, tag: str) -> list:
  return [cell for cell in notebook.cells if tag in cell.get("metadata", {}).get("tags", [])]


def assigned_names(source: str) -> set[str]:
  """The names a cell assigns at its top level (`A = ...`, `A, B = ...`)."""
  names = set()
  for node in ast.parse(source).body:
    for target in getattr(node, "targets", []):
      names.update(n.id for n in ast.walk(target) if isinstance(n, ast.Name))
  return names


def with_parameters(notebook: nbformat.NotebookNode, **values) -> nbformat.NotebookNode:
  """A copy of `notebook` whose `parameters` cell ends by assigning `values` (repr'd)."""
  notebook = copy.deepcopy(notebook)
  (cell,) = tagged_cells(notebook, "parameters")
  unknown = set(values) - assigned_names(cell.source)
  assert not unknown, f"the parameters cell defines no {sorted(unknown)}"
  cell.source += "\n# The test's values.\n" + "".join(
      f"{name} = {value!r}\n" for name, value in values.items())
  return notebook


def stream_text(notebook: nbformat.NotebookNode) -> str:
  """Everything the executed cells printed (stdout and stderr)."""
  return "".join(output.get("text", "") for cell in notebook.cells if cell.cell_type == "code"
                 for output in cell.get("outputs", []) if output.output_type == "stream")


def displayed_videos(notebook: nbformat.NotebookNode) -> list[str]:
  """The HTML of every embedded video the executed cells displayed."""
  return [output["data"]["text/html"] for cell in notebook.cells if cell.cell_type == "code"
          for output in cell.get("outputs", []) if output.output_type == "display_data"
          and "<video" in output.get("data", {}).get("text/html", "")]


def video_info(path: str) -> tuple[int, int, bool]:
  """(decoded frames, frame width, has an audio stream) of a video file."""
  with av.open(path) as container:
    frames = list(container.decode(video=0))
    return len(frames), frames[0].width, bool(container.streams.audio)


@pytest.fixture(scope="module")
def kernel(tmp_path_factory):
  """(kernelspec manager, kernel environment): a kernel of this interpreter, one CPU device, a
  compilation cache shared by every notebook of this module."""
  kernels_dir = tmp_path_factory.mktemp("kernels")
  ipykernel_kernelspec.write_kernel_spec(os.path.join(kernels_dir, KERNEL_NAME))
  env = dict(os.environ)
  env["XLA_FLAGS"] = re.sub(r"--xla_force_host_platform_device_count=\d+", "",
                            env.get("XLA_FLAGS", "")).strip()
  env["JAX_COMPILATION_CACHE_DIR"] = str(tmp_path_factory.mktemp("notebook_jax_cache"))
  return KernelSpecManager(kernel_dirs=[str(kernels_dir)]), env


def execute(notebook: nbformat.NotebookNode, kernel) -> nbformat.NotebookNode:
  """Runs every cell in order from the repository root; a cell's error fails the test."""
  spec_manager, env = kernel
  manager = KernelManager(kernel_name=KERNEL_NAME, kernel_spec_manager=spec_manager)
  client = nbclient.NotebookClient(notebook, km=manager, timeout=CELL_TIMEOUT_S,
                                   resources={"metadata": {"path": REPO}})
  client.execute(env=env)
  return notebook


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_opens_with_a_colab_badge_and_a_colab_only_install_cell(name):
  notebook = read_notebook(name)
  first = notebook.cells[0]
  assert first.cell_type == "markdown"
  assert ("https://colab.research.google.com/github/vasa-jax/vasa_jax/blob/main/notebooks/"
          f"{name}.ipynb") in first.source
  assert "colab-badge.svg" in first.source
  code_cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
  install = code_cells[0]
  assert tagged_cells(notebook, "colab-install") == [install]
  assert 'REPO_URL = "https://github.com/vasa-jax/vasa_jax"' in install.source
  assert 'if "google.colab" in sys.modules:' in install.source
  assert "pip\", \"install\", \"-q\", \"-e\", \".\"" in install.source
  (parameters,) = tagged_cells(notebook, "parameters")
  assert code_cells.index(parameters) == 1
  assert all(not cell.get("outputs") for cell in code_cells), "commit notebooks without outputs"


def test_every_notebook_is_executed_here():
  found = sorted(name[:-len(".ipynb")] for name in os.listdir(os.path.join(REPO, "notebooks"))
                 if name.endswith(".ipynb"))
  assert found == sorted(NOTEBOOKS)


def test_with_parameters_refuses_a_name_the_cell_does_not_define():
  with pytest.raises(AssertionError, match="defines no"):
    with_parameters(read_notebook("quickstart"), NOT_A_PARAMETER=1)


@pytest.fixture(scope="module")
def quickstart(kernel, tmp_path_factory):
  """(executed quickstart.ipynb, its demo workdir): the quick demo, run once for the module."""
  workdir = str(tmp_path_factory.mktemp("quickstart") / "demo")
  notebook = execute(with_parameters(read_notebook("quickstart"), WORKDIR=workdir, QUICK=True),
                     kernel)
  return notebook, workdir


@pytest.mark.slow
def test_quickstart_runs_the_quick_demo_and_shows_its_videos(quickstart):
  notebook, workdir = quickstart
  for name in ("talking_photo.mp4", "talking_synthtalk.mp4", "side_by_side.mp4"):
    frames, _, has_audio = video_info(os.path.join(workdir, name))
    assert frames > 0 and has_audio, name
  with open(os.path.join(workdir, "summary.json"), encoding="utf-8") as f:
    summary = json.load(f)
  assert summary["quick"] is True
  assert checkpoint.latest_step(os.path.join(workdir, "latent")) == demo.QUICK_STEPS["latent"]
  assert checkpoint.latest_step(os.path.join(workdir, "motion")) == demo.QUICK_STEPS["motion"]
  assert len(displayed_videos(notebook)) == 3
  assert any("image/png" in output.get("data", {}) for cell in notebook.cells
             if cell.cell_type == "code" for output in cell.get("outputs", []))
  printed = stream_text(notebook)
  assert "$ python -m vasa_jax.demo" in printed and "--quick" in printed
  assert '"heldout_reconstruction"' in printed  # the summary cell printed summary.json


@pytest.mark.slow
def test_inference_samples_with_the_controls_and_streams(quickstart, kernel, tmp_path):
  _, workdir = quickstart
  speech_seconds = 1.5
  notebook = execute(with_parameters(
      read_notebook("inference"), RUNS_DIR=workdir, OUTPUT_DIR=str(tmp_path),
      MAX_SPEECH_SECONDS=speech_seconds, GAZE=(10.0, -5.0), DISTANCE=1.2, LAMBDA_AUDIO=1.0,
      LAMBDA_GAZE=2.0, SEED=3, OUTPUT_SCALE=2), kernel)
  num_frames = audio_lib.num_video_frames(round(speech_seconds * audio_lib.SAMPLE_RATE), 25.0)
  for name, width in (("talking.mp4", 128), ("talking_streamed.mp4", 128),
                      ("gaze_left_ahead_right.mp4", 3 * 128)):
    assert video_info(os.path.join(tmp_path, name)) == (num_frames, width, True), name
  assert len(displayed_videos(notebook)) == 3
  printed = stream_text(notebook)
  assert f"{num_frames} frames, 1.5 s" in printed
  assert re.search(rf"first frame after [\d.]+ s; {num_frames} frames, then [\d.]+ frames/s",
                   printed)
  assert "training them with the demo" not in printed  # the quickstart's runs were used


@pytest.mark.slow
def test_training_trains_both_stages_and_resumes_after_an_interruption(kernel, tmp_path):
  # The quick demo's step counts: the train steps are then the programs the quickstart compiled.
  latent_steps, motion_steps = demo.QUICK_STEPS["latent"], demo.QUICK_STEPS["motion"]
  notebook = execute(with_parameters(
      read_notebook("training"), WORKDIR=str(tmp_path), NUM_SPEAKERS=4, CLIPS_PER_SPEAKER=1,
      MIN_SECONDS=2.0, MAX_SECONDS=2.0, TEST_FRACTION=0.5, LATENT_STEPS=latent_steps,
      MOTION_STEPS=motion_steps, MOTION_CHECKPOINT_EVERY=5, EVAL_EVERY_STEPS=0), kernel)
  manifest = records.read_manifest(os.path.join(tmp_path, "synthtalk"))
  assert sum(len(split["clips"]) for split in manifest["splits"].values()) == 4
  assert os.path.exists(os.path.join(tmp_path, "motion_data", records.MANIFEST_NAME))
  assert checkpoint.latest_step(os.path.join(tmp_path, "latent")) == latent_steps
  assert checkpoint.latest_step(os.path.join(tmp_path, "motion")) == motion_steps
  printed = stream_text(notebook)
  interrupted = re.search(r"interrupted: the newest checkpoint of \S+ is step (\d+) of", printed)
  assert interrupted, printed[-3000:]
  stopped_at = int(interrupted.group(1))
  assert 5 <= stopped_at < motion_steps
  assert "SIGTERM received" in printed
  assert re.search(rf"resuming from \S+ step {stopped_at}\b", printed)
  assert f"is at step {motion_steps} of {motion_steps}" in printed
  assert f"tensorboard --logdir={tmp_path}" in printed
  assert re.search(r"latent: loss/generator_total [\d.e+-]+ at step \d+ -> [\d.e+-]+ at step "
                   rf"{latent_steps}", printed)
