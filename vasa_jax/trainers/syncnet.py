"""Trains syncnet_python's SyncNet on prepared clips (`configs/syncnet.py`), e.g. SynthTalk.

  python -m data_prep.synthtalk --output_dir=/data/synthtalk --resolution=128
  python -m vasa_jax.train --config=configs/syncnet.py:cpu --workdir=/tmp/syncnet \
      --config.data_dir=/data/synthtalk

As the original (Chung & Zisserman 2016): an example is a 5-frame lip window and a 0.2 s MFCC
window, either from the same time (matched, label 1) or with the audio moved by a random false
offset of the same clip (label 0), and the two embeddings are trained with the contrastive loss

  L = y d^2 + (1 - y) max(margin - d, 0)^2,   d = ||lip embedding - audio embedding||_2.

The inputs are exactly what the evaluator feeds the network (`vasa_jax.evaluators.syncnet`): the
lip window is cropped as syncnet_python's pipeline crops (from the record's landmarks; the
evaluator uses the tracker's), 224 x 224 BGR 0-255; the MFCCs are python_speech_features' of the
clip's int16 16 kHz audio, steps 4t .. 4t + 19 for frame t (25 fps only). BatchNorm uses batch
statistics in training and the running averages it keeps for evaluation. At the end the weights
are written as `<workdir>/syncnet.npz` in syncnet_python's layout, for
`python -m vasa_jax.evaluate --syncnet=<workdir>/syncnet.npz --syncnet_width=<model.width>`.
"""

from __future__ import annotations

import os
from typing import Any, Optional

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from vasa_jax.data import input_pipeline
from vasa_jax.data import media
from vasa_jax.evaluators import mfcc as mfcc_lib
from vasa_jax.evaluators import syncnet as sync_eval
from vasa_jax.models import pretrained
from vasa_jax.models import syncnet as syncnet_lib
from vasa_jax.training import loop

WINDOW = syncnet_lib.LIP_FRAMES
STEPS = syncnet_lib.MFCC_STEPS
WEIGHTS_FILE = "syncnet.npz"
# Held-out batches scored by `evaluate`.
EVAL_NUM_BATCHES = 2


@flax.struct.dataclass
class SyncNetTrainState:
  step: jax.Array  # [] int32
  params: Any
  batch_stats: Any  # BatchNorm running statistics
  opt_state: Any


class SyncNetSampler:
  """Record index -> {lips uint8 [5, 224, 224, 3] RGB, mfcc float32 [13, 20], label float32}.

  With probability `matched_fraction` the audio window is the lip window's (label 1), else it is
  moved by an offset drawn uniformly from min_offset .. max_offset frames either way (label 0),
  within the clip.
  """

  def __init__(self, reader: Any, max_offset: int, min_offset: int, matched_fraction: float):
    self.reader = reader
    self.max_offset, self.min_offset = max_offset, min_offset
    self.matched_fraction = matched_fraction

  def __call__(self, record_index: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    record = self.reader[record_index]
    if record["fps"] != sync_eval.FPS or record["audio_sample_rate"] != mfcc_lib.SAMPLE_RATE:
      raise ValueError(f"clip {record['clip_id']}: SyncNet needs {sync_eval.FPS} fps video and "
                       f"{mfcc_lib.SAMPLE_RATE} Hz audio")
    annotations = record["annotations"]
    track = sync_eval.crop_track(annotations["face_found"], annotations["landmarks"])
    coefficients = mfcc_lib.mfcc(record["audio"]).T.astype(np.float32)  # [13, M]
    # Window starts t whose 5 frames lie in the face span and whose MFCCs exist.
    audio_frames = (coefficients.shape[1] - STEPS) // sync_eval.MFCC_STEPS_PER_FRAME + 1
    last_start = min(track.last - WINDOW + 1, audio_frames - 1)
    start = int(rng.integers(track.first, last_start + 1))
    matched = rng.random() < self.matched_fraction
    audio_start = start
    if not matched:
      offsets = [offset for offset in range(-self.max_offset, self.max_offset + 1)
                 if abs(offset) >= self.min_offset and 0 <= start + offset < audio_frames]
      audio_start = start + int(rng.choice(offsets))
    step = sync_eval.MFCC_STEPS_PER_FRAME * audio_start
    lips = np.stack([
        sync_eval.crop_frame(media.decode_jpeg(record["frames"][t]),
                             track.half_size[t - track.first], track.centre_y[t - track.first],
                             track.centre_x[t - track.first])
        for t in range(start, start + WINDOW)])
    return {"lips": lips, "mfcc": coefficients[:, step:step + STEPS],
            "label": np.float32(matched)}


def contrastive_loss(lip_embeddings: jax.Array, audio_embeddings: jax.Array, labels: jax.Array,
                     margin: float) -> tuple[jax.Array, jax.Array]:
  """(mean contrastive loss, distances [B]) of embeddings [B, D] and labels [B] (1: matched)."""
  distance = jnp.sqrt(jnp.sum(jnp.square(lip_embeddings - audio_embeddings), axis=-1) + 1e-12)
  loss = labels * distance ** 2 + (1.0 - labels) * jnp.maximum(margin - distance, 0.0) ** 2
  return jnp.mean(loss), distance


def network_inputs(batch: dict) -> tuple[jax.Array, jax.Array]:
  """(mfcc [B, 13, 20], lips [B, 5, 224, 224, 3] BGR float 0-255) of a batch."""
  return batch["mfcc"], batch["lips"][..., ::-1].astype(jnp.float32)


def make_train_step(model: syncnet_lib.SyncNet, config, optimizer: optax.GradientTransformation):
  def train_step(state: SyncNetTrainState, batch: dict, rng: jax.Array, frozen: Any):
    del rng, frozen  # nothing random in the step, no pretrained network
    mfcc, lips = network_inputs(batch)

    def loss_fn(params):
      (audio, lip), updates = model.apply(
          {"params": params, "batch_stats": state.batch_stats}, mfcc, lips, train=True,
          mutable=["batch_stats"])
      loss, distance = contrastive_loss(lip, audio, batch["label"], config.margin)
      return loss, (updates["batch_stats"], distance)

    (loss, (batch_stats, distance)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.params)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    labels = batch["label"]
    matched = jnp.sum(distance * labels) / jnp.maximum(jnp.sum(labels), 1.0)
    offset = jnp.sum(distance * (1 - labels)) / jnp.maximum(jnp.sum(1 - labels), 1.0)
    metrics = {"loss": loss, "distance/matched": matched, "distance/offset": offset,
               "grad_norm": optax.global_norm(grads)}
    return state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                         batch_stats=batch_stats, opt_state=opt_state), metrics
  return train_step


def make_init_state(model: syncnet_lib.SyncNet, optimizer: optax.GradientTransformation):
  def init_state(rng: jax.Array) -> SyncNetTrainState:
    inputs = [jnp.zeros(spec.shape, spec.dtype) for spec in model.example_inputs()]
    variables = model.init(rng, *inputs)
    return SyncNetTrainState(step=jnp.zeros((), jnp.int32), params=variables["params"],
                             batch_stats=variables["batch_stats"],
                             opt_state=optimizer.init(variables["params"]))
  return init_state


def make_iterator(config, split: str, seed: int, shuffle: bool = True,
                  process_index: Optional[int] = None, process_count: Optional[int] = None):
  data = config.data
  return input_pipeline.sampler_iterator(
      config.data_dir, split,
      lambda reader: SyncNetSampler(reader, data.max_offset, data.min_offset,
                                    data.matched_fraction),
      min_frames=WINDOW + 2 * data.max_offset, batch_size=config.batch_size, seed=seed,
      shuffle=shuffle, process_index=process_index, process_count=process_count,
      num_workers=data.num_workers, prefetch_batches=data.prefetch_batches)


def make_evaluate(model: syncnet_lib.SyncNet, config):
  """Held-out distances (running BatchNorm statistics) of fixed matched and offset pairs, and
  how often a pair is classified right by the threshold margin / 2."""
  iterator = make_iterator(config, config.data.eval_split, config.seed, shuffle=False,
                           process_index=0, process_count=1)
  batches = [next(iterator) for _ in range(EVAL_NUM_BATCHES)]

  @jax.jit
  def distances(params, batch_stats, mfcc, lips):
    audio, lip = model.apply({"params": params, "batch_stats": batch_stats}, mfcc, lips)
    return jnp.linalg.norm(lip - audio, axis=-1)

  def evaluate(state: SyncNetTrainState, step: int, writer) -> None:
    distance = np.concatenate([np.asarray(distances(state.params, state.batch_stats,
                                                    *network_inputs(batch)))
                               for batch in batches])
    labels = np.concatenate([batch["label"] for batch in batches]) > 0.5
    correct = np.where(labels, distance < config.margin / 2, distance >= config.margin / 2)
    scalars = {"eval/pair_accuracy": float(correct.mean())}
    for name, selected in (("matched", labels), ("offset", ~labels)):
      if selected.any():  # a small eval batch may hold one kind only
        scalars[f"eval/distance_{name}"] = float(distance[selected].mean())
    writer.write_scalars(step, scalars)
  return evaluate


def make_task(config, process_index: Optional[int] = None,
              process_count: Optional[int] = None) -> loop.Task:
  model = syncnet_lib.SyncNet(width=config.model.width)
  optimizer = optax.chain(optax.clip_by_global_norm(config.optimizer.grad_clip_norm),
                          optax.adam(config.optimizer.learning_rate))
  return loop.Task(
      init_state=make_init_state(model, optimizer),
      train_step=make_train_step(model, config, optimizer),
      train_iterator=make_iterator(config, config.data.train_split, config.seed,
                                   process_index=process_index, process_count=process_count),
      evaluate=make_evaluate(model, config) if config.eval_every_steps else None)


def train_and_evaluate(config, workdir: str, mesh) -> SyncNetTrainState:
  state = loop.train(config, workdir, make_task(config), mesh)
  if jax.process_index() == 0:
    model = syncnet_lib.SyncNet(width=config.model.width)
    variables = jax.device_get({"params": state.params, "batch_stats": state.batch_stats})
    pretrained.save_variables(os.path.join(workdir, WEIGHTS_FILE), variables, model)
  return state
