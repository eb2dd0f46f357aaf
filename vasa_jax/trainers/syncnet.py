"""Trains syncnet_python's SyncNet on prepared clips (`configs/syncnet.py`), e.g. SynthTalk.

  python -m data_prep.synthtalk --output_dir=/data/synthtalk --resolution=128
  python -m vasa_jax.train --config=configs/syncnet.py:cpu --workdir=/tmp/syncnet \
      --config.data_dir=/data/synthtalk

An example is L consecutive 5-frame lip windows of a clip and the 0.2 s MFCC windows around them:
each lip window is scored against the audio windows at every offset k = -K .. K frames (K =
`data.max_offset`, the evaluator's vshift 15) and the zero embedding the evaluator pads with, and
the network is trained on the evaluator's own task, to make the matched (k = 0) window the
nearest in Euclidean distance, by softmax cross-entropy over the logits -d_k / temperature,

  loss = -log softmax(-d / T)[k = 0],   d_k = ||lip embedding - audio embedding_k||_2.

(syncnet_python's paper trained pairs with a contrastive loss; on SynthTalk on a CPU that collapses
to equal matched and offset distances, experiments/LOG.md #sync-2026-12-07.) The embeddings are not
normalised, as the evaluator does not normalise them: the distances the loss ranks are the ones
Sc / SD average.

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
  """Record index -> {lips uint8 [L, 5, 224, 224, 3] RGB, mfcc float32 [2 K + L, 13, 20]}.

  L = `lip_windows` consecutive lip windows (window i: frames t + i .. t + i + 4, all in the face
  span) and the audio windows of frames t - K .. t + L - 1 + K (K = `max_offset`): lip window i's
  candidates are audio windows i .. i + 2 K, its own (in sync) is i + K. They are cut from the
  MFCCs of the clip's audio zero-padded by K frames at both ends: offsets past the clip's ends
  give silent or partly silent windows, as audio shifted with zero fill (or cut short) does.
  Consecutive lip windows share their audio windows and frames, so an example costs 2 K + L audio
  windows and L + 4 frames instead of L (2 K + 1) and 5 L.
  """

  def __init__(self, reader: Any, max_offset: int, lip_windows: int):
    self.reader = reader
    self.max_offset, self.lip_windows = max_offset, lip_windows

  def __call__(self, record_index: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    record = self.reader.record(record_index, with_frames=False)  # the frames read below
    if record["fps"] != sync_eval.FPS or record["audio_sample_rate"] != mfcc_lib.SAMPLE_RATE:
      raise ValueError(f"clip {record['clip_id']}: SyncNet needs {sync_eval.FPS} fps video and "
                       f"{mfcc_lib.SAMPLE_RATE} Hz audio")
    annotations = record["annotations"]
    track = sync_eval.crop_track(annotations["face_found"], annotations["landmarks"])
    audio = np.asarray(record["audio"])
    padding = np.zeros(self.max_offset * sync_eval.SAMPLES_PER_FRAME, audio.dtype)
    # Padding by whole frames keeps the clip's own MFCC steps: window t + K of the padded audio is
    # window t of the clip's.
    coefficients = mfcc_lib.mfcc(np.concatenate([padding, audio, padding])).T.astype(
        np.float32)  # [13, M]
    # First window starts t whose L lip windows lie in the face span and have (unpadded) MFCCs.
    audio_frames = ((coefficients.shape[1] - STEPS) // sync_eval.MFCC_STEPS_PER_FRAME + 1
                    - 2 * self.max_offset)
    last_start = min(track.last - WINDOW + 1, audio_frames - 1) - self.lip_windows + 1
    if last_start < track.first:
      raise ValueError(f"clip {record['clip_id']}: shorter than {self.lip_windows} lip windows")
    start = int(rng.integers(track.first, last_start + 1))
    steps = sync_eval.MFCC_STEPS_PER_FRAME * (
        start + np.arange(2 * self.max_offset + self.lip_windows))
    frames = np.stack([
        sync_eval.crop_frame(media.decode_jpeg(self.reader.frame(record_index, t)),
                             track.half_size[t - track.first], track.centre_y[t - track.first],
                             track.centre_x[t - track.first])
        for t in range(start, start + self.lip_windows + WINDOW - 1)])
    return {"lips": np.stack([frames[i:i + WINDOW] for i in range(self.lip_windows)]),
            "mfcc": np.stack([coefficients[:, step:step + STEPS] for step in steps])}


def offset_distances(lip_embeddings: jax.Array, audio_embeddings: jax.Array) -> jax.Array:
  """Euclidean distances [B, N + 1] of lip embeddings [B, D] to their N audio windows' [B, N, D]
  and, last, to the zero embedding (the evaluator's padding beyond the clip's ends)."""
  candidates = jnp.concatenate(
      [audio_embeddings, jnp.zeros_like(audio_embeddings[:, :1])], axis=1)  # [B, N + 1, D]
  return jnp.sqrt(jnp.sum(jnp.square(lip_embeddings[:, None] - candidates), axis=-1) + 1e-12)


def offset_loss(lip_embeddings: jax.Array, audio_embeddings: jax.Array,
                temperature: float) -> tuple[jax.Array, jax.Array]:
  """(mean cross-entropy, distances [B, N + 1]) of picking the matched audio window (the middle
  one of N = 2 K + 1) among all offsets and the zero embedding, logits -distance / temperature."""
  distance = offset_distances(lip_embeddings, audio_embeddings)
  matched = audio_embeddings.shape[1] // 2
  log_probs = jax.nn.log_softmax(-distance / temperature, axis=-1)
  return -jnp.mean(log_probs[:, matched]), distance


def distance_metrics(distance: jax.Array) -> dict[str, jax.Array]:
  """Mean matched, offset and zero-embedding distances, and how often the matched one is the
  smallest, of distances [B, 2 K + 2] (`offset_distances`)."""
  matched = (distance.shape[1] - 2) // 2  # K
  offsets = jnp.concatenate([distance[:, :matched], distance[:, matched + 1:-1]], axis=1)
  return {"distance/matched": jnp.mean(distance[:, matched]),
          "distance/offset": jnp.mean(offsets), "distance/zero": jnp.mean(distance[:, -1]),
          "offset_accuracy": jnp.mean(jnp.argmin(distance, axis=-1) == matched)}


def network_inputs(batch: dict) -> tuple[jax.Array, jax.Array]:
  """(mfcc [B (2 K + L), 13, 20], lips [B L, 5, 224, 224, 3] BGR float 0-255) of a batch."""
  mfcc, lips = batch["mfcc"], batch["lips"]
  return (mfcc.reshape((-1,) + mfcc.shape[2:]),
          lips.reshape((-1,) + lips.shape[2:])[..., ::-1].astype(jnp.float32))


def candidate_embeddings(audio_embeddings: jax.Array, lip_windows: int) -> jax.Array:
  """Audio embeddings [B, 2 K + L, D] -> each lip window's candidates [B L, 2 K + 1, D]: windows
  i .. i + 2 K for lip window i (`SyncNetSampler`)."""
  batch, num_audio, width = audio_embeddings.shape
  num_offsets = num_audio - lip_windows + 1
  index = jnp.arange(lip_windows)[:, None] + jnp.arange(num_offsets)[None, :]  # [L, 2 K + 1]
  return audio_embeddings[:, index].reshape(batch * lip_windows, num_offsets, width)


def embed_and_score(model: syncnet_lib.SyncNet, variables: Any, batch: dict, temperature: float,
                    train: bool):
  """(loss, distances [B L, 2 K + 2], BatchNorm updates or None) of a batch."""
  mfcc, lips = network_inputs(batch)
  batch_size, num_audio = batch["mfcc"].shape[:2]
  if train:
    (audio, lip), updates = model.apply(variables, mfcc, lips, train=True,
                                        mutable=["batch_stats"])
  else:
    (audio, lip), updates = model.apply(variables, mfcc, lips), None
  candidates = candidate_embeddings(audio.reshape(batch_size, num_audio, -1),
                                    batch["lips"].shape[1])
  loss, distance = offset_loss(lip, candidates, temperature)
  return loss, distance, updates


def make_train_step(model: syncnet_lib.SyncNet, config, optimizer: optax.GradientTransformation):
  def train_step(state: SyncNetTrainState, batch: dict, rng: jax.Array, frozen: Any):
    del rng, frozen  # nothing random in the step, no pretrained network

    def loss_fn(params):
      loss, distance, updates = embed_and_score(
          model, {"params": params, "batch_stats": state.batch_stats}, batch,
          config.temperature, train=True)
      return loss, (updates["batch_stats"], distance)

    (loss, (batch_stats, distance)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.params)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    metrics = {"loss": loss, "grad_norm": optax.global_norm(grads),
               **distance_metrics(distance)}
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
  return input_pipeline.sampler_iterator(
      config.data_dir, split,
      lambda reader: SyncNetSampler(reader, config.data.max_offset, config.data.lip_windows),
      min_frames=WINDOW + config.data.lip_windows - 1, batch_size=config.batch_size, seed=seed,
      shuffle=shuffle, process_index=process_index, process_count=process_count,
      num_workers=config.data.num_workers, prefetch_batches=config.data.prefetch_batches)


def make_evaluate(model: syncnet_lib.SyncNet, config):
  """On fixed held-out examples (running BatchNorm statistics): the loss, the mean matched,
  offset and zero-embedding distances and how often the matched audio window is the nearest."""
  iterator = make_iterator(config, config.data.eval_split, config.seed, shuffle=False,
                           process_index=0, process_count=1)
  batches = [next(iterator) for _ in range(EVAL_NUM_BATCHES)]

  @jax.jit
  def scores(params, batch_stats, batch):
    loss, distance, _ = embed_and_score(model, {"params": params, "batch_stats": batch_stats},
                                        batch, config.temperature, train=False)
    return {"loss": loss, **distance_metrics(distance)}

  def evaluate(state: SyncNetTrainState, step: int, writer) -> None:
    results = [jax.device_get(scores(state.params, state.batch_stats, batch))
               for batch in batches]
    writer.write_scalars(step, {f"eval/{name}": float(np.mean([r[name] for r in results]))
                                for name in results[0]})
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
