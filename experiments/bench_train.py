r"""The training budget of the paper-size models: compiled train steps, without running them.

  python experiments/bench_train.py --output=experiments/results/bench_train.json \
      [--num_devices=8] [--fsdp=1] [--dtype=bfloat16] [--mfu=0.25] [--stages=latent_512,...] \
      [--remat=both] [--latent_batch_per_device=0]

Compiles the train step that `vasa_jax.training.loop` runs (`loop.jit_train_step`: state donated,
batch sharded over the mesh's batch axes) of
  latent_512: configs/latent.py:paper (MegaPortraits' 512 schedule: 300k steps at batch 16),
  latent_256: configs/latent.py:paper_256 (200k steps at batch 24),
  motion:     configs/motion.py:paper (this project's 400k steps at batch 256),
each with the model's residual blocks / layers rematerialised and without, for ABSTRACT inputs
(`jax.ShapeDtypeStruct`s: nothing paper-size is allocated) on a mesh of --num_devices devices
(simulated CPU devices here: `--xla_force_host_platform_device_count`) at the config's global
batch (per-device batch = batch / devices), or for stage 1 at --latent_batch_per_device (where
the config's batch does not compile within the machine's memory; FLOPs are then counted per
example and the projection scales them to the config's batch). Stage 1
traces every loss term of the config, including the VGG19, ArcFace and gaze terms (abstract
pretrained weights).

Per step and program it reports
  MEASURED (from XLA, for the compiled program): parameters; FLOPs per step from the cost
    analysis of the per-device program (x devices for the global figure; stage 2 with its layers
    unrolled, because the cost analysis counts a loop body once); per-device memory from
    `compiled.memory_analysis()`: arguments, outputs, aliased (donated) bytes and temporaries;
  PROJECTED (arithmetic, not a measurement): step time on 8 H100s = global FLOPs / (8 x 989 dense
    bf16 TFLOP/s x --mfu), and the days the config's schedule (total_steps) takes at that rate.
The memory figures are those of the CPU compilation of the program (XLA's CPU backend: other
fusion and layouts than a GPU's, bf16 convolutions may be computed in f32); they size the
program, a GPU run measures it. The FLOPs do not depend on the backend.
"""

import argparse
import dataclasses
import json
import os
import re
import sys
import time
from typing import Any, Callable, Optional, Sequence

# The repository root, for its configs/ folder (experiments run as scripts from anywhere).
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# H100 SXM dense bf16 tensor-core throughput (NVIDIA's datasheet, without sparsity).
H100_PEAK_FLOPS = 989.4e12
PROJECTED_GPUS = 8
STAGES = ("latent_512", "latent_256", "motion")
# Collective operations of XLA's HLO (their async "-start" forms on GPUs included).
COLLECTIVE_KINDS = ("all-gather", "all-reduce", "reduce-scatter", "all-to-all",
                    "collective-permute")
_DTYPE_BYTES = {"pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "f16": 2, "bf16": 2, "s32": 4,
                "u32": 4, "f32": 4, "s64": 8, "u64": 8, "f64": 8}


@dataclasses.dataclass(frozen=True)
class StepParts:
  """What compiling a stage's train step needs, without data or weight files."""
  config: Any
  init_state: Callable[[Any], Any]  # rng -> boxed train state
  train_step: Callable  # (state, batch, rng, frozen) -> (state, metrics)
  frozen: Any  # abstract frozen arrays (pretrained networks' variables) or None
  batch: Callable[[int], dict]  # global batch size -> {name: ShapeDtypeStruct}
  parameters: Callable[[Any], dict[str, int]]  # abstract state -> {name: parameter count}


# ----------------------------------------------------------------------------------------------
# The two stages' train steps.
# ----------------------------------------------------------------------------------------------
def latent_parts(config) -> StepParts:
  """Stage 1's step for `config` (configs/latent.py); the perceptual terms whose
  `config.pretrained` names any file get abstract pretrained variables."""
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from vasa_jax.data import input_pipeline  # pylint: disable=g-import-not-at-top
  from vasa_jax.models import pretrained  # pylint: disable=g-import-not-at-top
  from vasa_jax.trainers import latent  # pylint: disable=g-import-not-at-top
  from vasa_jax.training import sharding  # pylint: disable=g-import-not-at-top

  networks = latent.Networks.from_config(config)
  weights = latent.loss_weights(config)
  init_state, generator_tx, discriminator_tx = latent.make_init_state(networks, config)
  frozen = {name: (nn.meta.unbox(pretrained.abstract_variables(model)) if model else None)
            for name, model in (("vgg19", networks.vgg), ("arcface", networks.arcface),
                                ("gaze", networks.gaze))}
  size = config.image_size

  def batch(batch_size: int) -> dict:
    def array(*shape, dtype=jnp.float32):
      return jax.ShapeDtypeStruct((batch_size,) + shape, dtype)
    spec = {}
    for name in ("source", "driver", "cross_identity"):
      spec[f"{name}_image"] = array(size, size, 3, dtype=jnp.uint8)
      spec[f"{name}_head_pose"] = array(3)
      spec[f"{name}_gaze"] = array(2)
      spec[f"{name}_expression"] = array(input_pipeline.EXPRESSION_SIZE)
    spec["driver_region_mask"] = array(size, size, dtype=jnp.uint8)
    spec["driver_eye_boxes"] = array(2, 4)
    spec["source_expression_mask"] = array(size, size, dtype=jnp.uint8)
    spec["speaker"] = array(dtype=jnp.int32)
    spec["cross_identity_speaker"] = array(dtype=jnp.int32)
    return spec

  def parameters(state) -> dict[str, int]:
    return {"generator": sharding.parameter_count(state.generator),
            "discriminator": sharding.parameter_count(state.discriminator)}

  return StepParts(config, init_state,
                   latent.make_train_step(networks, config, weights, generator_tx,
                                          discriminator_tx),
                   frozen, batch, parameters)


def motion_parts(config) -> StepParts:
  """Stage 2's step for `config` (configs/motion.py), with unit data statistics."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from vasa_jax.inference import sampler as sampler_lib  # pylint: disable=g-import-not-at-top
  from vasa_jax.models import motion_dit  # pylint: disable=g-import-not-at-top
  from vasa_jax.trainers import motion  # pylint: disable=g-import-not-at-top
  from vasa_jax.training import sharding  # pylint: disable=g-import-not-at-top

  model = motion_dit.MotionDiT.from_config(config.model)
  optimizer, learning_rate = motion.make_optimizer(config.optimizer, config.total_steps)
  statistics = {name: {"mean": np.zeros(shape, np.float32), "std": np.ones(shape, np.float32)}
                for name, shape in sampler_lib.statistics_shapes(config.model).items()}
  m, a, w, k = (config.model.motion_dim, config.model.audio_dim, config.model.window,
                config.model.num_previous)

  def batch(batch_size: int) -> dict:
    def array(*shape, dtype=jnp.float32):
      return jax.ShapeDtypeStruct((batch_size,) + shape, dtype)
    return {"motion": array(w, m), "motion_previous": array(k, m),
            "audio_features": array(w, a), "audio_features_previous": array(k, a),
            "gaze_main": array(2), "distance_main": array(),
            "emotion": array(config.model.emotion_dim), "previous_mask": array(k, dtype=bool),
            "window_start": array(dtype=jnp.int32)}

  def parameters(state) -> dict[str, int]:
    return {"motion_dit": sharding.parameter_count(state.params)}

  return StepParts(config, motion.make_init_state(model, optimizer, statistics),
                   motion.make_train_step(model, config, optimizer, learning_rate), None, batch,
                   parameters)


# ----------------------------------------------------------------------------------------------
# Compiling and reading the compiled program.
# ----------------------------------------------------------------------------------------------
def batch_shards(config, mesh) -> int:
  """How many ways the mesh splits the batch (the mesh axes of the "batch" sharding rule)."""
  axes = dict(config.sharding_rules).get("batch") or ()
  axes = (axes,) if isinstance(axes, str) else tuple(axes)
  count = 1
  for axis in axes:
    count *= mesh.shape[axis]
  return count


def compile_train_step(parts: StepParts, mesh, batch_size: Optional[int] = None
                       ) -> tuple[Any, dict[str, int]]:
  """(the compiled train step for the global `batch_size` (default: the config's) on `mesh`,
  {name: parameter count}); nothing is allocated."""
  import jax  # pylint: disable=g-import-not-at-top
  from vasa_jax.data import input_pipeline  # pylint: disable=g-import-not-at-top
  from vasa_jax.training import loop  # pylint: disable=g-import-not-at-top
  from vasa_jax.training import sharding  # pylint: disable=g-import-not-at-top

  config = parts.config
  rng = jax.eval_shape(lambda: loop.root_rng(config))
  boxed = jax.eval_shape(parts.init_state, rng)
  shardings = sharding.state_shardings(boxed, mesh, config.sharding_rules)
  state = sharding.abstract_state(boxed, shardings)
  data_sharding = input_pipeline.batch_sharding(mesh, config.sharding_rules)
  batch = {name: jax.ShapeDtypeStruct(spec.shape, spec.dtype, sharding=data_sharding)
           for name, spec in parts.batch(batch_size or config.batch_size).items()}
  replicated = sharding.replicated(mesh)
  frozen = jax.tree.map(lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype,
                                                          sharding=replicated), parts.frozen)
  step = loop.jit_train_step(parts.train_step, shardings, data_sharding, config.sharding_rules)
  compiled = step.lower(state, batch, jax.ShapeDtypeStruct(rng.shape, rng.dtype,
                                                           sharding=replicated),
                        frozen).compile()
  return compiled, parts.parameters(state)


def memory(compiled) -> dict[str, int]:
  """Per-device bytes of a compiled program: arguments, outputs, aliased (outputs written into
  donated arguments), temporaries, and their sum as the program's peak estimate."""
  stats = compiled.memory_analysis()
  sizes = {"arguments": stats.argument_size_in_bytes, "outputs": stats.output_size_in_bytes,
           "aliased": stats.alias_size_in_bytes, "temporaries": stats.temp_size_in_bytes}
  sizes["total"] = (sizes["arguments"] + sizes["outputs"] - sizes["aliased"]
                    + sizes["temporaries"])
  return sizes


def flops(compiled) -> float:
  """FLOPs of a compiled (per-device) program from XLA's cost analysis; a loop body counts once."""
  analysis = compiled.cost_analysis()
  if isinstance(analysis, (list, tuple)):
    analysis = analysis[0]
  return float(analysis.get("flops", 0.0))


@dataclasses.dataclass(frozen=True)
class Collective:
  kind: str  # one of COLLECTIVE_KINDS
  shapes: tuple[tuple[str, tuple[int, ...]], ...]  # (dtype, dims) of each result
  line: str  # the HLO instruction

  @property
  def elements(self) -> int:
    total = 0
    for _, dims in self.shapes:
      count = 1
      for size in dims:
        count *= size
      total += count
    return total

  @property
  def bytes(self) -> int:
    total = 0
    for dtype, dims in self.shapes:
      count = _DTYPE_BYTES.get(dtype, 4)
      for size in dims:
        count *= size
      total += count
    return total


_INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?%?[\w.\-]+\s*=\s*(.*?)\s+(" +
                          "|".join(COLLECTIVE_KINDS) + r")(?:-start)?\(")
_ARRAY_TYPE = re.compile(r"\b([a-z]+\d*)\[([\d,]*)\]")


def collectives(hlo_text: str) -> list[Collective]:
  """The cross-device collectives of a compiled program's HLO text, with their result shapes."""
  found = []
  for line in hlo_text.splitlines():
    match = _INSTRUCTION.match(line)
    if not match:
      continue
    shapes = tuple((dtype, tuple(int(size) for size in dims.split(",") if size))
                   for dtype, dims in _ARRAY_TYPE.findall(match.group(1))
                   if dtype in _DTYPE_BYTES)
    found.append(Collective(match.group(2), shapes, line.strip()))
  return found


# ----------------------------------------------------------------------------------------------
# The budget.
# ----------------------------------------------------------------------------------------------
def stage_config(stage: str, dtype: str, remat: bool):
  """The config of `stage` (STAGES) with the compute dtype and remat set; stage 1 with every
  perceptual term of its recipe on (abstract pretrained weights)."""
  from configs import latent as latent_config  # pylint: disable=g-import-not-at-top
  from configs import motion as motion_config  # pylint: disable=g-import-not-at-top

  if stage in ("latent_512", "latent_256"):
    config = latent_config.get_config("paper" if stage == "latent_512" else "paper_256")
    config.pretrained.vgg19 = "abstract"
    config.pretrained.arcface = "abstract"
    config.pretrained.gaze = "abstract"
  elif stage == "latent_tiny":  # tests: no pretrained networks
    config = latent_config.get_config("tiny")
  elif stage in ("motion", "motion_tiny"):
    config = motion_config.get_config("paper" if stage == "motion" else "tiny")
  else:
    raise ValueError(f"unknown stage {stage!r}")
  config.model.dtype = dtype
  config.model.remat = remat
  return config


def stage_parts(stage: str, config) -> StepParts:
  return motion_parts(config) if stage.startswith("motion") else latent_parts(config)


def budget(stage: str, config, mesh, mfu: float, flops_config=None,
           batch_size: Optional[int] = None) -> dict[str, Any]:
  """Measured figures of one compiled step and the projection (see the module doc).

  `flops_config`: the config whose compiled step counts the FLOPs (stage 2: layers unrolled);
  default `config`. `batch_size`: the global batch compiled (default the config's); the
  projection is for the config's batch at the compiled program's FLOPs per example.
  """
  batch_size = batch_size or config.batch_size
  start = time.perf_counter()
  compiled, parameters = compile_train_step(stage_parts(stage, config), mesh, batch_size)
  compile_s = time.perf_counter() - start
  counted = compiled if flops_config is None else compile_train_step(
      stage_parts(stage, flops_config), mesh, batch_size)[0]
  devices = mesh.devices.size
  per_device_flops = flops(counted)
  global_flops = per_device_flops * devices
  step_s = (global_flops / batch_size * config.batch_size
            / (PROJECTED_GPUS * H100_PEAK_FLOPS * mfu))
  return {
      "measured": {
          "parameters": parameters,
          "flops_per_step_per_device": per_device_flops,
          "flops_per_step": global_flops,
          "flops_per_example": global_flops / batch_size,
          "memory_per_device_bytes": memory(compiled),
          "compile_s": compile_s,
      },
      "projected": {
          "step_s": step_s,
          "examples_per_s": config.batch_size / step_s,
          "days_to_total_steps": config.total_steps * step_s / 86400,
      },
  }


def run(stages: Sequence[str], num_devices: int, fsdp: int, dtype: str, mfu: float,
        log=print, remat_options: Sequence[bool] = (False, True),
        latent_batch_per_device: int = 0) -> dict[str, Any]:
  """The budget of each stage with and without remat (`remat_options`) on a (data, fsdp) mesh of
  `num_devices`; stage 1 at `latent_batch_per_device` examples per device if > 0."""
  import jax  # pylint: disable=g-import-not-at-top
  from vasa_jax.training import sharding  # pylint: disable=g-import-not-at-top

  mesh = sharding.create_mesh({"data": num_devices // fsdp, "fsdp": fsdp, "model": 1},
                              jax.devices()[:num_devices])
  report = {
      "mesh": dict(mesh.shape), "backend_compiled_on": jax.default_backend(),
      "jax_version": jax.__version__, "dtype": dtype,
      "projection": {"gpus": PROJECTED_GPUS, "gpu": "H100 SXM",
                     "peak_flops_per_gpu": H100_PEAK_FLOPS, "model_flops_utilisation": mfu},
      "stages": {}}
  for stage in stages:
    base = stage_config(stage, dtype, remat=False)
    shards = batch_shards(base, mesh)
    compiled_batch = (latent_batch_per_device * shards
                      if stage.startswith("latent") and latent_batch_per_device else
                      base.batch_size)
    entry = {"config": {"latent_512": "configs/latent.py:paper",
                        "latent_256": "configs/latent.py:paper_256",
                        "motion": "configs/motion.py:paper"}.get(stage, stage),
             "batch_size": base.batch_size,
             "compiled_batch_size": compiled_batch,
             "per_device_batch": compiled_batch // shards,
             "total_steps": base.total_steps}
    for remat in remat_options:
      config = stage_config(stage, dtype, remat)
      flops_config = None
      if stage.startswith("motion") and config.model.scan:
        flops_config = stage_config(stage, dtype, remat)
        flops_config.model.scan = False
      log(f"compiling {stage} (remat={remat}) on mesh {dict(mesh.shape)} ...")
      result = budget(stage, config, mesh, mfu, flops_config, compiled_batch)
      entry["remat" if remat else "no_remat"] = result
      log(summary_line(stage, remat, entry, result))
    report["stages"][stage] = entry
  return report


def summary_line(stage: str, remat: bool, entry: dict, result: dict) -> str:
  measured, projected = result["measured"], result["projected"]
  sizes = measured["memory_per_device_bytes"]
  gib = 2.0 ** 30
  return (f"| {stage} | {'yes' if remat else 'no'} | {entry['per_device_batch']} | "
          f"{sum(measured['parameters'].values()) / 1e6:.1f}M | "
          f"{measured['flops_per_step'] / 1e12:.2f} | {sizes['arguments'] / gib:.2f} | "
          f"{sizes['temporaries'] / gib:.2f} | {sizes['total'] / gib:.2f} | "
          f"{projected['step_s']:.3g} | {projected['days_to_total_steps']:.3g} |")


TABLE_HEADER = ("| stage | remat | batch/device | parameters | TFLOPs/step (measured) | "
                "arguments GiB | temporaries GiB | total GiB/device (measured) | "
                "step s (projected) | days (projected) |\n|---|---|---|---|---|---|---|---|---|---|")


def main(argv: Optional[Sequence[str]] = None) -> dict[str, Any]:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--output", required=True, help="JSON file to write")
  parser.add_argument("--stages", default=",".join(STAGES),
                      help=f"comma-separated among {STAGES} (tests: latent_tiny, motion_tiny)")
  parser.add_argument("--num_devices", type=int, default=8,
                      help="mesh devices (simulated on a CPU)")
  parser.add_argument("--fsdp", type=int, default=1, help="FSDP ways of the mesh (the rest: data)")
  parser.add_argument("--dtype", default="bfloat16", help="model compute dtype")
  parser.add_argument("--mfu", type=float, default=0.25,
                      help="model-FLOPs utilisation assumed by the projection")
  parser.add_argument("--remat", choices=("both", "no", "yes"), default="both",
                      help="compile without remat, with it, or both")
  parser.add_argument("--latent_batch_per_device", type=int, default=0,
                      help="stage-1 examples per device compiled (0: the config's batch)")
  args = parser.parse_args(argv)
  stages = [stage for stage in args.stages.split(",") if stage]
  unknown = [s for s in stages if s not in STAGES + ("latent_tiny", "motion_tiny")]
  if unknown or args.num_devices % args.fsdp:
    parser.error(f"unknown stages {unknown}" if unknown
                 else f"--fsdp {args.fsdp} does not divide --num_devices {args.num_devices}")
  flag = f"--xla_force_host_platform_device_count={args.num_devices}"
  if "jax" not in sys.modules and flag not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + flag).strip()
  print(TABLE_HEADER, flush=True)
  report = run(stages, args.num_devices, args.fsdp, args.dtype, args.mfu,
               log=lambda line: print(line, flush=True),
               remat_options={"both": (False, True), "no": (False,), "yes": (True,)}[args.remat],
               latent_batch_per_device=args.latent_batch_per_device)
  with open(args.output, "w", encoding="utf-8") as f:
    json.dump(report, f, indent=1)
  print(f"wrote {args.output}")
  return report


if __name__ == "__main__":
  main()
