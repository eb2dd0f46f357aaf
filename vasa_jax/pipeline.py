"""SynthTalk -> stage 1 -> motion extraction -> stage 2, on one machine, resumable.

`run(workdir, data, latent_config, motion_config)` makes, under `workdir`:
  synthtalk/    a SynthTalk set (`vasa_jax.data.synthtalk.dataset`), skipped when its manifest
                exists with the same settings;
  latent/       the stage-1 run (`vasa_jax.trainers.latent`; resumes from its newest checkpoint,
                nothing to do once it reached `total_steps`);
  motion_data/  the stage-2 shards (`vasa_jax.data.extract_motion`; finished shards are kept);
  motion/       the stage-2 run (`vasa_jax.trainers.motion`).
The two runs are ordinary training workdirs: `vasa_jax.sample`, `vasa_jax.app` and TensorBoard
read them as they read runs started with `python -m vasa_jax.train`. `python -m vasa_jax.demo`
and `experiments/motion_synthtalk.py` run it at their own scales.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import time
from typing import Any, Callable

import jax
import ml_collections

from vasa_jax.data import extract_motion
from vasa_jax.data import motion_records
from vasa_jax.data import records
from vasa_jax.trainers import latent as latent_trainer
from vasa_jax.trainers import motion as motion_trainer
from vasa_jax.training import sharding

STEPS = ("synthtalk", "latent", "motion_data", "motion")


class PipelineError(ValueError):
  """A workdir that holds something else than this pipeline would make there."""


@dataclasses.dataclass(frozen=True)
class SynthTalkSettings:
  """The SynthTalk set a pipeline trains on (the flags of `python -m data_prep.synthtalk`)."""
  num_speakers: int = 100
  clips_per_speaker: int = 3
  resolution: int = 64
  min_seconds: float = 2.0
  max_seconds: float = 4.0
  test_fraction: float = 0.2
  seed: int = 0
  num_workers: int = 2
  # Share of clips with a smile or raised brows (their emotion scores are the ground truth).
  expression_fraction: float = 0.0

  def flags(self) -> list[str]:
    return [f"--{field.name}={getattr(self, field.name)}" for field in dataclasses.fields(self)]


def paths(workdir: str) -> dict[str, str]:
  """Where each step writes: {step name: directory}."""
  return {name: os.path.join(workdir, name) for name in STEPS}


def one_device_mesh() -> jax.sharding.Mesh:
  return sharding.create_mesh({"data": 1, "fsdp": 1, "model": 1}, jax.devices()[:1])


def make_synthtalk(output_dir: str, settings: SynthTalkSettings) -> bool:
  """Generates the set unless `output_dir` already holds it; returns whether it generated.
  Raises PipelineError when `output_dir` holds a set made with other settings."""
  if os.path.exists(os.path.join(output_dir, records.MANIFEST_NAME)):
    made_with = records.read_manifest(output_dir).get("settings", {})
    differing = {name: (made_with.get(name), value)
                 for name, value in dataclasses.asdict(settings).items()
                 if name != "num_workers" and made_with.get(name) != value}
    if differing:
      raise PipelineError(f"{output_dir} holds SynthTalk made with other settings "
                          f"(setting: (there, asked)) {differing}; use another workdir")
    return False
  # A child interpreter: its worker processes then import the light data set module, not the
  # caller's (which for `python -m vasa_jax.demo` imports JAX and every trainer).
  result = subprocess.run(
      [sys.executable, "-m", "vasa_jax.data.synthtalk.dataset", f"--output_dir={output_dir}"]
      + settings.flags(), stdout=subprocess.DEVNULL, check=False)
  if result.returncode:
    raise PipelineError(f"SynthTalk generation into {output_dir} failed (exit status "
                        f"{result.returncode}; its messages are above)")
  return True


def run(workdir: str, data: SynthTalkSettings, latent_config: ml_collections.ConfigDict,
        motion_config: ml_collections.ConfigDict,
        announce: Callable[[str], Any] = print) -> dict[str, float]:
  """Runs (or resumes) every step; returns the seconds each took this time.

  The configs' data directories are set here; the stage-2 motion width follows the stage-1
  model (`POSE_DIM + dyn_dim`) and its frame rate the data's.
  """
  where = paths(workdir)
  os.makedirs(workdir, exist_ok=True)
  seconds = {}

  def timed(name, message, function, *args, **kwargs):
    announce(message)
    start = time.perf_counter()
    function(*args, **kwargs)
    seconds[name] = round(time.perf_counter() - start, 1)

  timed("synthtalk", f"SynthTalk ({data.num_speakers} speakers x {data.clips_per_speaker} clips, "
        f"{data.resolution} px) -> {where['synthtalk']}", make_synthtalk, where["synthtalk"], data)
  latent_config = ml_collections.ConfigDict(latent_config.to_dict())
  latent_config.data_dir = where["synthtalk"]
  timed("latent", f"stage 1, face latent model ({latent_config.total_steps} steps) -> "
        f"{where['latent']}", latent_trainer.train_and_evaluate, latent_config, where["latent"],
        one_device_mesh())
  motion_config = ml_collections.ConfigDict(motion_config.to_dict())
  motion_config.model.motion_dim = motion_records.POSE_DIM + latent_config.model.dyn_dim
  motion_config.fps = float(records.read_manifest(where["synthtalk"])["fps"])
  timed("motion_data", f"motion extraction -> {where['motion_data']}", extract_motion.extract,
        where["latent"], where["synthtalk"], where["motion_data"], motion_config)
  motion_config.data_dir = where["motion_data"]
  timed("motion", f"stage 2, motion diffusion model ({motion_config.total_steps} steps) -> "
        f"{where['motion']}", motion_trainer.train_and_evaluate, motion_config, where["motion"],
        one_device_mesh())
  return seconds
