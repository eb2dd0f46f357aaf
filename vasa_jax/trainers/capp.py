"""Trains CAPP's audio and pose encoders on prepared clips (`configs/capp.py`), CLIP-style.

  python -m data_prep.synthtalk --output_dir=/data/synthtalk --min_seconds=4 --max_seconds=6
  python -m vasa_jax.train --config=configs/capp.py:cpu --workdir=/tmp/capp \
      --config.data_dir=/data/synthtalk
  python -m vasa_jax.evaluate --generated=... --capp_checkpoint=/tmp/capp

An example is one window of L frames (3 s) of a clip: its speech features A and its pose
sequence P (`vasa_jax.evaluators.capp`: the records' head angles, face position and distance,
centred per window), plus negatives of the same clip: K_shift copies of its pose moved by
distinct random shifts of min_shift .. max_shift frames either way (as many as the clip has
room for), and K_scale copies of P with its motion scaled by 2^u, |u| uniform in
[min_log2_scale, max_log2_scale] with a random sign. With unit embeddings a_i = f_a(A_i),
p_i = f_p(P_i), n_ik = f_p(N_ik) for the negatives and the learned scale s, the loss is CLIP's
symmetric cross-entropy over the batch with the negatives added on the audio side,

  L = 1/2 [CE_i(s a_i . [p_1 .. p_B, n_i1 .. n_iK], i) + CE_i(s p_i . [a_1 .. a_B], i)],

other clips teach what motion goes with speech, the shifted copies teach when, the scaled ones
how much. K_shift = K_scale = 0 gives CLIP's loss alone. At the end `<workdir>/capp.json` and `<workdir>/capp_params.msgpack` are
written; `--capp_checkpoint=<workdir>` scores with them.
"""

from __future__ import annotations

from typing import Any, Optional

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from vasa_jax.data import input_pipeline
from vasa_jax.data import speech_features
from vasa_jax.evaluators import capp as capp_eval
from vasa_jax.models import capp as capp_lib
from vasa_jax.training import loop

# Held-out batches scored by `evaluate`.
EVAL_NUM_BATCHES = 2
# The logit that stands for "no shifted copy" (exp of it is 0 in float32).
_MASKED_LOGIT = -1e9


@flax.struct.dataclass
class CAPPTrainState:
  step: jax.Array  # [] int32
  params: Any
  opt_state: Any


class CAPPSampler:
  """Record index -> {audio [L, A], pose [L, 6], negative_pose [K, L, 6], has_negative [K] bool}
  (K = num_shifted + num_scaled: the shifted copies first), all windows centred on their mean over
  time; a shifted copy the clip has no room for is masked out."""

  def __init__(self, reader: Any, window: int, min_shift: int, max_shift: int,
               featurizer: speech_features.SpeechFeaturizer, num_shifted: int = 1,
               num_scaled: int = 0, log2_scale_range: tuple[float, float] = (1.0, 2.0)):
    self.reader, self.window = reader, window
    self.min_shift, self.max_shift = min_shift, max_shift
    self.num_shifted, self.num_scaled = num_shifted, num_scaled
    self.log2_scale_range = log2_scale_range
    self.featurizer = featurizer

  def __call__(self, record_index: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    record = self.reader.record(record_index, with_frames=False)
    if abs(record["fps"] - self.featurizer.fps) > 1e-6:
      raise ValueError(f"clip {record['clip_id']} is {record['fps']} fps; the CAPP config "
                       f"(config.fps) expects {self.featurizer.fps}")
    pose = capp_eval.record_pose(record)  # [T, 6]
    audio = self.featurizer(np.asarray(record["audio"], np.float32) / 32768.0)  # [T', A]
    num_frames = min(len(pose), len(audio))
    start = int(rng.integers(0, num_frames - self.window + 1))
    shifts = [shift for shift in range(-self.max_shift, self.max_shift + 1)
              if abs(shift) >= self.min_shift and 0 <= start + shift <= num_frames - self.window]
    chosen = rng.permutation(shifts)[:self.num_shifted] if shifts else np.zeros(0, np.int64)
    starts = np.concatenate([[start], start + chosen, np.full(
        self.num_shifted - len(chosen), start)]).astype(np.int64)  # copies past `chosen`: masked
    pose_windows = capp_eval.centred_windows(pose, starts, self.window)  # [1 + K_shift, L, 6]
    low, high = self.log2_scale_range
    factors = 2.0 ** (rng.uniform(low, high, self.num_scaled) *
                      rng.choice([-1.0, 1.0], self.num_scaled))  # [K_scale]
    scaled = pose_windows[:1] * factors[:, None, None].astype(np.float32)  # [K_scale, L, 6]
    return {"audio": capp_eval.centred_windows(audio, starts[:1], self.window)[0],
            "pose": pose_windows[0],
            "negative_pose": np.concatenate([pose_windows[1:], scaled]),
            "has_negative": np.concatenate([np.arange(self.num_shifted) < len(chosen),
                                            np.ones(self.num_scaled, bool)])}


def clip_loss(audio: jax.Array, pose: jax.Array, negatives: jax.Array, has_negative: jax.Array,
              scale: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(the symmetric loss of the module docstring, logits [B, B]) of unit embeddings audio, pose
  [B, E] and each example's own negatives [B, K, E] (has_negative [B, K]: masked where False)."""
  logits = scale * audio @ pose.T  # [B, B]: audio i against pose j
  negative_logits = jnp.where(has_negative, scale * jnp.einsum("be,bke->bk", audio, negatives),
                              _MASKED_LOGIT)  # [B, K]
  labels = jnp.arange(audio.shape[0])
  audio_to_pose = optax.softmax_cross_entropy_with_integer_labels(
      jnp.concatenate([logits, negative_logits], axis=1), labels)
  pose_to_audio = optax.softmax_cross_entropy_with_integer_labels(logits.T, labels)
  return 0.5 * (audio_to_pose.mean() + pose_to_audio.mean()), logits


def embed(model: capp_lib.CAPP, params: Any, batch: dict) -> tuple[jax.Array, ...]:
  """(audio, pose [B, E], negative pose embeddings [B, K, E], logit scale) of a batch."""
  audio, pose, scale = model.apply({"params": params}, batch["audio"], batch["pose"])
  batch_size, num_negatives = batch["negative_pose"].shape[:2]
  negatives = model.apply({"params": params},
                          batch["negative_pose"].reshape(-1, *batch["negative_pose"].shape[2:]),
                          method=model.encode_pose)  # [B K, E]
  return audio, pose, negatives.reshape(batch_size, num_negatives, -1), scale


def negative_cosines(audio: jax.Array, negatives: jax.Array, has_negative: jax.Array,
                     num_shifted: int) -> dict[str, jax.Array]:
  """{"shifted", "scaled": mean cosine of audio [B, E] with those unmasked negatives [B, K, E]}
  for the kinds the batch holds (the first `num_shifted` negatives are the shifted ones)."""
  cosines = jnp.einsum("be,bke->bk", audio, negatives)  # [B, K]
  parts = {"shifted": slice(0, num_shifted), "scaled": slice(num_shifted, negatives.shape[1])}
  return {name: jnp.sum(jnp.where(has_negative[:, part], cosines[:, part], 0.0)) /
                jnp.maximum(jnp.sum(has_negative[:, part]), 1)
          for name, part in parts.items() if part.stop > part.start}


def make_train_step(model: capp_lib.CAPP, optimizer: optax.GradientTransformation,
                    num_shifted: int):
  def train_step(state: CAPPTrainState, batch: dict, rng: jax.Array, frozen: Any):
    del rng, frozen  # nothing random in the step, no pretrained network

    def loss_fn(params):
      audio, pose, negatives, scale = embed(model, params, batch)
      loss, logits = clip_loss(audio, pose, negatives, batch["has_negative"], scale)
      return loss, (audio, pose, negatives, scale, logits)

    (loss, (audio, pose, negatives, scale, logits)), grads = jax.value_and_grad(
        loss_fn, has_aux=True)(state.params)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    metrics = {"loss": loss, "cosine/matched": jnp.sum(audio * pose, axis=-1).mean(),
               "retrieval_top1": jnp.mean(jnp.argmax(logits, axis=1) == jnp.arange(len(audio))),
               "logit_scale": scale, "grad_norm": optax.global_norm(grads)}
    metrics.update({f"cosine/{name}": cosine for name, cosine in negative_cosines(
        audio, negatives, batch["has_negative"], num_shifted).items()})
    return state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                         opt_state=opt_state), metrics
  return train_step


def make_init_state(model: capp_lib.CAPP, optimizer: optax.GradientTransformation):
  def init_state(rng: jax.Array) -> CAPPTrainState:
    inputs = [jnp.zeros(spec.shape, spec.dtype) for spec in model.example_inputs()]
    params = model.init(rng, *inputs)["params"]
    return CAPPTrainState(step=jnp.zeros((), jnp.int32), params=params,
                          opt_state=optimizer.init(params))
  return init_state


def featurizer(config) -> speech_features.SpeechFeaturizer:
  return speech_features.from_config(config.audio, config.fps)


def make_iterator(config, split: str, seed: int, shuffle: bool = True,
                  process_index: Optional[int] = None, process_count: Optional[int] = None):
  data, window = config.data, config.model.window
  features = featurizer(config)
  return input_pipeline.sampler_iterator(
      config.data_dir, split,
      lambda reader: CAPPSampler(reader, window, data.min_shift, data.max_shift, features,
                                 data.num_shifted, data.num_scaled,
                                 (data.min_log2_scale, data.max_log2_scale)),
      min_frames=window, batch_size=config.batch_size, seed=seed, shuffle=shuffle,
      process_index=process_index, process_count=process_count, num_workers=data.num_workers,
      prefetch_batches=data.prefetch_batches)


def make_evaluate(model: capp_lib.CAPP, config):
  """Held-out cosines of fixed windows: matched, shifted and scaled copies, other clips' (off the
  diagonal), and how often an audio window's nearest pose window is its own."""
  iterator = make_iterator(config, config.data.eval_split, config.seed, shuffle=False,
                           process_index=0, process_count=1)
  batches = [next(iterator) for _ in range(EVAL_NUM_BATCHES)]
  num_shifted = config.data.num_shifted

  @jax.jit
  def cosines(params, batch):
    audio, pose, negatives, _ = embed(model, params, batch)
    return audio @ pose.T, negative_cosines(audio, negatives, batch["has_negative"], num_shifted)

  def evaluate(state: CAPPTrainState, step: int, writer) -> None:
    matrices, negatives = [], []
    for batch in batches:
      matrix, negative = jax.device_get(cosines(state.params, batch))
      matrices.append(matrix)
      negatives.append(negative)
    diagonal = np.concatenate([np.diag(matrix) for matrix in matrices])
    off_diagonal = np.concatenate([matrix[~np.eye(len(matrix), dtype=bool)]
                                   for matrix in matrices])
    top1 = np.concatenate([np.argmax(matrix, axis=1) == np.arange(len(matrix))
                           for matrix in matrices])
    scalars = {"eval/cosine_matched": float(diagonal.mean()),
               "eval/cosine_other_clips": float(off_diagonal.mean()),
               "eval/retrieval_top1": float(top1.mean())}
    for name in negatives[0]:
      scalars[f"eval/cosine_{name}"] = float(np.mean([negative[name] for negative in negatives]))
    writer.write_scalars(step, scalars)
  return evaluate


def make_optimizer(config) -> optax.GradientTransformation:
  warmup_steps = config.optimizer.warmup_steps
  schedule = optax.warmup_cosine_decay_schedule(
      0.0, config.optimizer.learning_rate, warmup_steps,
      max(config.total_steps, warmup_steps + 1))  # decay_steps counts the warmup
  return optax.chain(optax.clip_by_global_norm(config.optimizer.grad_clip_norm),
                     optax.adamw(schedule, weight_decay=config.optimizer.weight_decay))


def make_model(config) -> capp_lib.CAPP:
  return capp_lib.CAPP.from_config(config.model, featurizer(config).dim)


def make_task(config, process_index: Optional[int] = None,
              process_count: Optional[int] = None) -> loop.Task:
  model, optimizer = make_model(config), make_optimizer(config)
  if config.data.num_shifted and config.data.min_shift < 1:
    raise ValueError("config.data.min_shift must be at least 1 (a shift of 0 is the match)")
  if config.data.num_scaled and not 0 < config.data.min_log2_scale <= config.data.max_log2_scale:
    raise ValueError("config.data.min_log2_scale must be above 0 (a scale of 1 is the match) "
                     "and at most max_log2_scale")
  return loop.Task(
      init_state=make_init_state(model, optimizer),
      train_step=make_train_step(model, optimizer, config.data.num_shifted),
      train_iterator=make_iterator(config, config.data.train_split, config.seed,
                                   process_index=process_index, process_count=process_count),
      evaluate=make_evaluate(model, config) if config.eval_every_steps else None,
      progress_metrics=("loss", "cosine/matched"))


def train_and_evaluate(config, workdir: str, mesh) -> CAPPTrainState:
  state = loop.train(config, workdir, make_task(config), mesh)
  if jax.process_index() == 0:
    capp_eval.save(workdir, state.params, config.model, config.audio, config.fps)
  return state
