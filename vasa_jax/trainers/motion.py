"""Stage 2: trains VASA-1's motion diffusion transformer (`configs/motion.py`).

  python -m vasa_jax.train --config=configs/motion.py:tiny --workdir=/tmp/motion_tiny \
      --config.data_dir=/data/synthtalk_motion

The data are the stage-2 records of `vasa_jax.data.motion_records`. Each step takes windows of W motion
frames X^0 = [z_pose, z_dyn] with their audio features A, the K frames before each window (X_pre,
A_pre) and the clip's main gaze g, distance d and emotion e. Motion, audio features, gaze and
distance are standardised by statistics of the training split (computed when the state is
initialised and checkpointed with it, so the sampler undoes the same normalisation); emotion
coefficients go in as they are. A diffusion time t is drawn uniformly from [0, T), X^t =
q_sample(X^0, t, noise), conditions are dropped at the config's rates (classifier-free guidance)
and `MotionDiT` predicts X^0 under an MSE loss, plus `config.diffusion.velocity_loss` times the
MSE of its frame-to-frame steps (`schedules.velocity_loss`); both terms are logged whatever the
weight (loss/x0, loss/velocity). AdamW with global-norm clipping and a linear warm-up into a
cosine decay updates the parameters; an EMA of them is what evaluation and sampling use.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Optional

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from vasa_jax.data import input_pipeline
from vasa_jax.data import motion_records
from vasa_jax.data import records
from vasa_jax.diffusion import conditioning
from vasa_jax.diffusion import normalization
from vasa_jax.diffusion import schedules
from vasa_jax.evaluators import motion_samples
from vasa_jax.models import motion_dit
from vasa_jax.training import ema
from vasa_jax.training import loop
from vasa_jax.training import sharding as sharding_lib

# Per-frame record fields windowed by the input pipeline (each also comes as <name>_previous).
FRAME_FIELDS = ("motion", "audio_features")
# Clip-level record fields copied into each example.
CLIP_FIELDS = ("gaze_main", "distance_main", "emotion")
# Fields standardised by training-split statistics (emotion coefficients are used raw).
NORMALIZED_FIELDS = ("motion", "audio_features", "gaze_main", "distance_main")
# The statistics read at most this many clips of the training split, evenly spaced (enough frames
# for a mean and std of every dimension, and a bounded start-up cost on a 500K-clip data set).
STATISTICS_MAX_CLIPS = 4096
# Evaluation: batches of the eval split (fixed windows) and the fixed diffusion times, as
# fractions of T, at which the EMA model's x0 loss is measured.
EVAL_NUM_BATCHES = 2
EVAL_TIMESTEP_FRACTIONS = (0.1, 0.5, 0.9)
# `jax.random.fold_in` tags of the step's independent random draws.
RNG_TIMESTEP, RNG_NOISE, RNG_CONDITION_DROPOUT, RNG_MODEL_DROPOUT = range(4)


@flax.struct.dataclass
class MotionTrainState:
  """Everything a stage-2 checkpoint holds (the sampler reads `ema_params` and `statistics`)."""
  step: jax.Array  # [] int32
  params: Any  # MotionDiT parameters
  opt_state: Any  # AdamW state of `params`
  ema_params: Any  # exponential moving average of `params` (evaluated and sampled)
  # {field: {"mean": [...], "std": [...]}} float32, for each of NORMALIZED_FIELDS: motion [M],
  # audio_features [A], gaze_main [2], distance_main []; from the training split
  statistics: dict


def data_dims(data_dir: str, split: str) -> dict[str, tuple[int, str]]:
  """{"motion_dim" | "audio_dim" | "emotion_dim": (width in the data, where it was read)}.

  Motion and audio widths come from the manifest's "motion" / "audio" entries when present,
  otherwise (and always for emotion) from the split's first record.
  """
  manifest = records.read_manifest(data_dir)
  first = next(input_pipeline.split_records(data_dir, split, [0]))
  dims = {
      "motion_dim": (np.shape(first["motion"])[-1], f"the first {split!r} record's motion"),
      "audio_dim": (np.shape(first["audio_features"])[-1],
                    f"the first {split!r} record's audio_features"),
      "emotion_dim": (np.shape(first["emotion"])[-1], f"the first {split!r} record's emotion"),
  }
  if "motion_dim" in manifest.get("motion", {}):
    dims["motion_dim"] = (manifest["motion"]["motion_dim"], "manifest motion.motion_dim")
  if "dim" in manifest.get("audio", {}):
    dims["audio_dim"] = (manifest["audio"]["dim"], "manifest audio.dim")
  return dims


def check_data_dims(model_config, data_dir: str, split: str) -> None:
  """Raises ValueError naming both numbers when `config.model` does not fit the data's widths."""
  for name, (data_dim, origin) in data_dims(data_dir, split).items():
    if model_config[name] != data_dim:
      raise ValueError(
          f"config.model.{name}={model_config[name]} but the data in {data_dir!r} have "
          f"{data_dim} ({origin}); set --config.model.{name}={data_dim} or use data extracted "
          "for this config")


def compute_statistics(data_dir: str, split: str, min_std: float,
                       max_clips: int = STATISTICS_MAX_CLIPS) -> dict[str, dict[str, np.ndarray]]:
  """Mean and std (floored at `min_std`) of NORMALIZED_FIELDS over a split, as float32 numpy.

  Per-frame fields count every frame of every clip read; clip-level fields count each clip once.
  Reads every clip, or `max_clips` evenly spaced ones of a larger split.
  """
  num_clips = len(input_pipeline.ClipIndex.load(data_dir, split).clip_ids)
  indices = np.unique(np.linspace(0, num_clips - 1, min(num_clips, max_clips)).round())
  count = dict.fromkeys(NORMALIZED_FIELDS, 0)
  total, total_squares = {}, {}
  for record in input_pipeline.split_records(data_dir, split, indices.astype(int)):
    for name in NORMALIZED_FIELDS:
      values = np.asarray(record[name], np.float64)
      rows = values if name in FRAME_FIELDS else values[None]  # [T or 1, ...]
      count[name] += rows.shape[0]
      total[name] = total.get(name, 0.0) + rows.sum(axis=0)
      total_squares[name] = total_squares.get(name, 0.0) + np.square(rows).sum(axis=0)
  statistics = {}
  for name in NORMALIZED_FIELDS:
    mean = total[name] / count[name]
    variance = np.maximum(total_squares[name] / count[name] - np.square(mean), 0.0)
    statistics[name] = {"mean": np.asarray(mean, np.float32),
                        "std": np.asarray(np.maximum(np.sqrt(variance), min_std), np.float32)}
  logging.info("statistics of %d clips of split %r: %d frames", len(indices), split,
               count["motion"])
  return statistics


def make_optimizer(optimizer_config, total_steps: int
                   ) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """Clipped AdamW with a linear warm-up to `learning_rate`, then a cosine decay to
  `final_learning_rate` at `total_steps`; returns (optimizer, learning-rate schedule)."""
  warmup_steps = optimizer_config.warmup_steps
  schedule = optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=optimizer_config.learning_rate, warmup_steps=warmup_steps,
      decay_steps=max(total_steps, warmup_steps + 1),
      end_value=optimizer_config.final_learning_rate)
  optimizer = optax.chain(
      optax.clip_by_global_norm(optimizer_config.grad_clip_norm),
      optax.adamw(schedule, b1=optimizer_config.b1, b2=optimizer_config.b2,
                  weight_decay=optimizer_config.weight_decay))
  return optimizer, schedule


def model_inputs(batch: dict, statistics: dict) -> tuple[jax.Array, dict[str, jax.Array]]:
  """A batch -> (normalised X^0 [B, W, M], the `MotionDiT` conditions keyed by CONDITION_KEYS)."""
  def normalized(name: str, values: jax.Array) -> jax.Array:
    return normalization.MotionStatistics(**statistics[name]).normalize(values)

  x0 = normalized("motion", batch["motion"])  # [B, W, M]
  conditions = {
      "previous_motion": normalized("motion", batch["motion_previous"]),  # [B, K, M]
      "previous_audio": normalized("audio_features", batch["audio_features_previous"]),  # [B,K,A]
      "audio": normalized("audio_features", batch["audio_features"]),  # [B, W, A]
      "gaze": normalized("gaze_main", batch["gaze_main"]),  # [B, 2]
      "distance": normalized("distance_main", batch["distance_main"]),  # [B]
      "emotion": batch["emotion"],  # [B, E]
  }
  return x0, conditions


def incomplete_previous(previous_mask: jax.Array) -> jax.Array:
  """[B, K] bool (True: the previous frame is in the clip) -> [B] bool: some frame is missing.

  Such a window (it starts fewer than K frames into its clip) is trained with X_pre and A_pre
  dropped: at inference the previous block is either complete (every window after the first
  follows W >= K generated frames) or absent (the first window, which uses the null previous
  embedding), so a partly repeated previous block would be an input the sampler never gives.
  """
  return ~jnp.all(previous_mask, axis=-1)


def make_init_state(model: motion_dit.MotionDiT, optimizer: optax.GradientTransformation,
                    statistics: dict):
  """rng -> the initial `MotionTrainState` (parameters boxed with their logical axis names)."""
  def init_state(rng: jax.Array) -> MotionTrainState:
    def zeros(*shape, dtype=jnp.float32):
      return jnp.zeros((1,) + shape, dtype)
    params = model.init(
        rng, zeros(model.window, model.motion_dim), zeros(dtype=jnp.int32),
        zeros(model.num_previous, model.motion_dim), zeros(model.num_previous, model.audio_dim),
        zeros(model.window, model.audio_dim), zeros(2), zeros(), zeros(model.emotion_dim)
    )["params"]
    return MotionTrainState(
        step=jnp.zeros((), jnp.int32), params=params, opt_state=optimizer.init(params),
        ema_params=params,
        statistics=jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), statistics))
  return init_state


def make_train_step(model: motion_dit.MotionDiT, config, optimizer: optax.GradientTransformation,
                    learning_rate: optax.Schedule):
  """The pure step (state, batch, rng, frozen) -> (state, {loss, grad_norm, learning_rate})."""
  diffusion = schedules.make_schedule(config.diffusion.schedule, config.diffusion.num_steps)
  probabilities = {key: config.diffusion[key] for key in conditioning.DEFAULT_PROBABILITIES}

  def train_step(state: MotionTrainState, batch: dict, rng: jax.Array, frozen: Any):
    del frozen  # stage 2 uses no pretrained network
    x0, conditions = model_inputs(batch, state.statistics)
    batch_size = x0.shape[0]
    timestep = jax.random.randint(jax.random.fold_in(rng, RNG_TIMESTEP), (batch_size,), 0,
                                  diffusion.num_steps)  # [B]
    noise = jax.random.normal(jax.random.fold_in(rng, RNG_NOISE), x0.shape, x0.dtype)
    noisy_motion = schedules.q_sample(diffusion, x0, timestep, noise)  # [B, W, M]
    drops = conditioning.sample_condition_dropout(
        jax.random.fold_in(rng, RNG_CONDITION_DROPOUT), batch_size, model.window, probabilities)
    drops["drop_previous"] = drops["drop_previous"] | incomplete_previous(batch["previous_mask"])

    def loss_fn(params):
      predicted = model.apply(  # [B, W, M]
          {"params": params}, noisy_motion, timestep, drops=drops, deterministic=False,
          rngs={"dropout": jax.random.fold_in(rng, RNG_MODEL_DROPOUT)}, **conditions)
      # Every frame counts, also those whose audio the dropout truncated: their motion is real,
      # and the model learns to continue a window without audio.
      terms = {"x0": schedules.x0_loss(predicted, x0),
               "velocity": schedules.velocity_loss(predicted, x0, ~drops["drop_previous"])}
      return terms["x0"] + config.diffusion.velocity_loss * terms["velocity"], terms

    (loss, terms), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    ema_params = ema.update(state.ema_params, params, state.step, config.ema_decay)
    metrics = {"loss": loss, "loss/x0": terms["x0"], "loss/velocity": terms["velocity"],
               "grad_norm": optax.global_norm(grads),
               "learning_rate": learning_rate(state.step)}
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                         ema_params=ema_params), metrics
  return train_step


def make_evaluate(model: motion_dit.MotionDiT, config, video_dir: Optional[str] = None):
  """Held-out x0 loss of the EMA parameters on fixed windows, noise and diffusion times, and
  with `config.eval.num_clips` > 0 rendered samples and their statistics
  (`vasa_jax.evaluators.motion_samples`; `video_dir` receives their mp4s).

  No condition is dropped except X_pre/A_pre of windows near a clip start (as in training).
  Writes eval/x0_loss (the mean) and eval/x0_loss_t<t> for each time t, and beside them
  eval/x0_loss_of_the_mean: the loss of predicting the training mean (0 once normalised) on the
  same windows, the trivial baseline a trained model beats (`run_metrics` warns when it does
  not).
  """
  iterator = input_pipeline.stage2_iterator(
      config.data_dir, config.data.eval_split, batch_size=config.batch_size,
      window=model.window, num_previous=model.num_previous, frame_fields=FRAME_FIELDS,
      clip_fields=CLIP_FIELDS, with_audio=False, seed=config.seed, shuffle=False,
      process_index=0, process_count=1)
  batches = jax.tree.map(lambda *values: np.stack(values),  # [N, B, ...]
                         *[next(iterator) for _ in range(EVAL_NUM_BATCHES)])
  noise = np.random.default_rng(config.seed).standard_normal(  # [N, B, W, M]
      batches["motion"].shape, np.float32)
  diffusion = schedules.make_schedule(config.diffusion.schedule, config.diffusion.num_steps)
  timesteps = tuple(int(fraction * diffusion.num_steps) for fraction in EVAL_TIMESTEP_FRACTIONS)
  samples = (motion_samples.SampleEvaluator(config, video_dir) if config.eval.num_clips
             else None)

  compiled = {}  # the jitted losses and the replicated windows and noise, per mesh

  def x0_losses(params, statistics, batches, noise):  # -> [len(timesteps) + 1]
    def batch_losses(batch_and_noise):
      batch, batch_noise = batch_and_noise
      x0, conditions = model_inputs(batch, statistics)
      drops = {"drop_previous": incomplete_previous(batch["previous_mask"])}
      losses = []
      for time in timesteps:
        timestep = jnp.full(x0.shape[:1], time, jnp.int32)  # [B]
        predicted = model.apply({"params": params},
                                schedules.q_sample(diffusion, x0, timestep, batch_noise),
                                timestep, drops=drops, **conditions)
        losses.append(schedules.x0_loss(predicted, x0))
      losses.append(schedules.x0_loss(jnp.zeros_like(x0), x0))  # the mean's
      return jnp.stack(losses)
    return jnp.mean(jax.lax.map(batch_losses, (batches, noise)), axis=0)

  def evaluate(state: MotionTrainState, step: int, writer) -> None:
    # The windows and noise enter as replicated arguments and the losses come back replicated:
    # the same on one host or many.
    replicated = sharding_lib.replicated_over(state.ema_params)
    if replicated not in compiled:
      compiled[replicated] = (jax.jit(x0_losses, out_shardings=replicated),
                              sharding_lib.put_replicated((batches, noise), replicated))
    losses_fn, arguments = compiled[replicated]
    *losses, mean_loss = np.asarray(losses_fn(state.ema_params, state.statistics,
                                              *arguments)).tolist()
    scalars = {f"eval/x0_loss_t{timestep}": loss for timestep, loss in zip(timesteps, losses)}
    scalars["eval/x0_loss"] = float(np.mean(losses))
    scalars["eval/x0_loss_of_the_mean"] = mean_loss
    writer.write_scalars(step, scalars)
    if samples is not None:
      samples(state.ema_params, state.statistics, step, writer)
  return evaluate


def make_task(config, process_index: Optional[int] = None,
              process_count: Optional[int] = None, workdir: Optional[str] = None) -> loop.Task:
  """Checks the data against `config.model`, computes the statistics and builds the Task
  (the evaluation's sample videos go to `<workdir>/eval_samples` when `workdir` is given)."""
  input_pipeline.check_data_dir(config.data_dir, motion_records.RECORD_KIND, "motion")
  check_data_dims(config.model, config.data_dir, config.data.train_split)
  statistics = compute_statistics(config.data_dir, config.data.train_split,
                                  config.diffusion.min_std)
  model = motion_dit.MotionDiT.from_config(config.model)
  optimizer, learning_rate = make_optimizer(config.optimizer, config.total_steps)
  iterator = input_pipeline.stage2_iterator(
      config.data_dir, config.data.train_split, batch_size=config.batch_size,
      window=model.window, num_previous=model.num_previous, frame_fields=FRAME_FIELDS,
      clip_fields=CLIP_FIELDS, with_audio=False, seed=config.seed,
      process_index=process_index, process_count=process_count,
      num_workers=config.data.num_workers, prefetch_batches=config.data.prefetch_batches)
  video_dir = os.path.join(workdir, "eval_samples") if workdir else None
  return loop.Task(
      init_state=make_init_state(model, optimizer, statistics),
      train_step=make_train_step(model, config, optimizer, learning_rate),
      train_iterator=iterator,
      evaluate=make_evaluate(model, config, video_dir) if config.eval_every_steps else None,
      progress_metrics=("loss", "loss/x0"))


def train_and_evaluate(config, workdir: str, mesh) -> MotionTrainState:
  return loop.train(config, workdir, make_task(config, workdir=workdir), mesh)
