r"""Runs the trained stage-1 encoders over clip shards and writes stage-2 motion shards.

  python -m data_prep.extract_motion --latent_checkpoint=/tmp/latent_tiny \
      --shards=/data/synthtalk --output_dir=/data/synthtalk_motion \
      [--config=configs/motion.py:tiny] [--config.audio.wav2vec2_dir=...] [--batch_size=64] \
      [--overwrite]

Input: a directory of clip records (`vasa_jax.data.records`, made by `data_prep.prepare` or
`data_prep.synthtalk`). Output: one motion shard per input shard, same split and file name, holding
one `vasa_jax.data.motion_records` record per clip in the same order, and a manifest with the same
splits and clip lists plus the motion and audio entries. Per clip:

  motion          [z_pose, z_dyn] of every frame from the stage-1 motion encoder (EMA weights),
                  jitted at a fixed batch (the last batch of a clip is padded) whose frames are
                  split over all local devices (a 1-D mesh)
  audio_features  `vasa_jax.data.speech_features` of `--config`'s `config.audio`, one per frame; the
                  featuriser gives `num_video_frames(N, fps)` frames, which may differ from T by
                  one: extra frames are cropped, a missing last frame repeats the one before
  gaze_main       the centre of the largest cluster of per-frame gaze (`main_gaze_direction`)
  distance_main   the median per-frame distance; emotion: the mean over frames

Resuming: an output shard is written atomically, then a sidecar `<shard>.json` holding a key of
everything that decides its content (the input shard's clip ids, a digest of the encoder weights,
the motion and audio settings). A re-run skips every shard whose file exists and whose sidecar
holds the matching key, and redoes the rest (all of them with --overwrite). The manifest is
removed when work starts and written last, so a directory with a manifest is complete.

Many machines: with --num_tasks=N, task --task_index=I extracts the input shards I, I + N, ...
(in manifest order) and writes no manifest; `--merge` (same flags otherwise) writes it once
every shard is finished, and refuses, naming the shards missing, before that.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import time
from typing import Any, Iterator, Mapping, Sequence

import flax.linen as nn
import grain
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import tqdm
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from vasa_jax.data import input_pipeline
from vasa_jax.data import motion_records
from vasa_jax.data import records
from vasa_jax.data import speech_features
from vasa_jax.models import autoencoder as autoencoder_lib
from vasa_jax.training import checkpoint as checkpoint_lib

# Gaze clusters are discs of this radius (degrees of theta, phi): wider than the few degrees of
# estimator noise and fixational jitter, narrower than a typical saccade between fixations.
GAZE_CLUSTER_RADIUS = 5.0
# Mean-shift iterations from the densest frame (it converges in a few on real gaze tracks).
_MEAN_SHIFT_ITERATIONS = 20
# Audio feature frames allowed beyond or short of the video frames before a clip is an error.
MAX_AUDIO_FRAME_MISMATCH = 1
SIDECAR_SUFFIX = ".json"
DEFAULT_BATCH_SIZE = 64


class ExtractionError(ValueError):
  """The inputs cannot make motion shards (mismatched dimensions, bad data); says which and why."""


# ----------------------------------------------------------------------------------------------
# Per-clip signals.
# ----------------------------------------------------------------------------------------------
def main_gaze_direction(gaze: np.ndarray, radius: float = GAZE_CLUSTER_RADIUS) -> np.ndarray:
  """The clip's main gaze direction: float32 [2] from per-frame gaze [T, 2] (degrees).

  Deterministic flat-kernel mean shift started at the densest frame (the one with the most
  frames within `radius`, the earliest on ties): the centre moves to the mean of the frames within
  `radius` of it until it settles. It lands on the centre of the largest fixation cluster rather
  than between clusters, where the plain mean would.
  """
  gaze = np.asarray(gaze, np.float64)
  pairwise = np.linalg.norm(gaze[:, None, :] - gaze[None, :, :], axis=-1)  # [T, T]
  centre = gaze[np.argmax((pairwise <= radius).sum(axis=1))]  # [2]
  for _ in range(_MEAN_SHIFT_ITERATIONS):
    members = np.linalg.norm(gaze - centre, axis=-1) <= radius  # [T]
    new_centre = gaze[members].mean(axis=0)
    if np.allclose(new_centre, centre, atol=1e-6):
      break
    centre = new_centre
  return centre.astype(np.float32)


def align_to_frames(features: np.ndarray, num_frames: int, clip_id: str) -> np.ndarray:
  """Audio features [T', A] -> [num_frames, A]: crops extra frames, repeats the last for missing.

  Raises ExtractionError when T' is more than MAX_AUDIO_FRAME_MISMATCH away (audio not aligned).
  """
  mismatch = len(features) - num_frames
  if abs(mismatch) > MAX_AUDIO_FRAME_MISMATCH or len(features) == 0:
    raise ExtractionError(
        f"clip {clip_id}: its audio gives {len(features)} feature frames for {num_frames} video "
        "frames: the audio does not cover the clip")
  if mismatch < 0:
    features = np.concatenate([features, np.repeat(features[-1:], -mismatch, axis=0)])
  return features[:num_frames]


def motion_record(clip: Mapping[str, Any], motion: np.ndarray,
                  audio_features: np.ndarray) -> dict[str, Any]:
  """A motion record (`vasa_jax.data.motion_records`) of clip record `clip`.

  motion [T, 7 + dyn_dim] from the encoder, audio_features [T, A] already aligned to the frames.
  """
  annotations = clip["annotations"]
  distance = np.asarray(annotations["distance"], np.float32)  # [T]
  record = {
      "format_version": motion_records.MOTION_FORMAT_VERSION,
      "record_kind": motion_records.RECORD_KIND,
      "clip_id": clip["clip_id"], "speaker_id": clip["speaker_id"], "source": clip["source"],
      "source_path": clip["source_path"],
      "fps": float(clip["fps"]),
      "num_frames": len(clip["frames"]),
      "motion": np.asarray(motion, np.float32),
      "audio_features": np.asarray(audio_features, np.float16),
      "audio": np.asarray(clip["audio"], np.int16),
      "audio_sample_rate": int(clip["audio_sample_rate"]),
      "gaze": np.asarray(annotations["gaze"], np.float32),
      "gaze_main": main_gaze_direction(annotations["gaze"]),
      "distance": distance,
      "distance_main": np.asarray(np.median(distance), np.float32),
      "emotion": np.asarray(annotations["emotion"], np.float32).mean(axis=0),  # [E]
      "head_pose": np.asarray(annotations["head_pose"], np.float32),
  }
  if "ground_truth" in clip:
    record["ground_truth"] = clip["ground_truth"]
  return record


# ----------------------------------------------------------------------------------------------
# The stage-1 motion encoder.
# ----------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class LatentEncoder:
  """A restored stage-1 model: its config, EMA parameters and where they came from."""
  config: ml_collections.ConfigDict  # the latent run's config (from its config.json)
  params: Any  # EMA parameters of the motion encoder, {"motion_encoder": numpy arrays}
  step: int  # checkpoint step
  workdir: str

  @property
  def dyn_dim(self) -> int:
    return int(self.config.model.dyn_dim)

  def digest(self) -> str:
    """sha256 of the parameters' names, shapes and values (identifies the weights)."""
    hasher = hashlib.sha256()
    for path, leaf in jax.tree_util.tree_flatten_with_path(self.params)[0]:
      leaf = np.ascontiguousarray(leaf)
      hasher.update(f"{jax.tree_util.keystr(path)}{leaf.shape}{leaf.dtype}".encode())
      hasher.update(leaf.tobytes())
    return hasher.hexdigest()


def load_latent_encoder(workdir: str) -> LatentEncoder:
  """The motion encoder's EMA weights of a stage-1 run's newest checkpoint, checked against the
  model its config.json describes.

  Only the motion encoder's part of the generator is checked and kept: it alone decides the
  motion. Raises CheckpointError naming the problem (no run, no checkpoint, other weights).
  """
  config, state, step = checkpoint_lib.restore_for_inference(workdir, "latent")
  if "ema_generator" not in state:
    raise checkpoint_lib.CheckpointError(
        f"{workdir!r} step {step} holds no ema_generator (it has {sorted(state)})")
  model = autoencoder_lib.FaceAutoencoder.from_config(config.model)
  image = jax.ShapeDtypeStruct((1, config.image_size, config.image_size, 3), jnp.float32)
  abstract = nn.meta.unbox(jax.eval_shape(  # {"motion_encoder": ...} shapes
      functools.partial(model.init, method=model.encode_motion), jax.random.key(0), image
  )["params"])
  restored = {name: state["ema_generator"][name] for name in abstract
              if name in state["ema_generator"]}
  checkpoint_lib.check_param_shapes(restored, abstract,
                                    f"the EMA generator of {workdir!r} step {step}")
  return LatentEncoder(config, restored, step, os.path.abspath(workdir))


class MotionEncoder:
  """uint8 frames [T, S, S, 3] -> motion [T, 7 + dyn_dim] float32, jitted once.

  Frames go to the devices in batches of `batch_size` (rounded up to a multiple of the device
  count; a clip's last batch is padded with copies of its last frame), each batch split over the
  devices of a 1-D mesh, the parameters replicated. Batches are dispatched without waiting, so
  decoding the next batch overlaps the devices' work on this one.
  """

  def __init__(self, encoder: LatentEncoder, batch_size: int,
               devices: Sequence[jax.Device] | None = None):
    devices = list(jax.local_devices() if devices is None else devices)
    self.batch_size = -(-batch_size // len(devices)) * len(devices)
    self.image_size = int(encoder.config.image_size)
    mesh = Mesh(np.array(devices), ("batch",))
    self.batch_sharding = NamedSharding(mesh, PartitionSpec("batch"))
    replicated = NamedSharding(mesh, PartitionSpec())
    model = autoencoder_lib.FaceAutoencoder.from_config(encoder.config.model)

    def encode(params, frames):  # uint8 [B, S, S, 3] -> float32 [B, 7 + dyn_dim]
      # [-1, 1], as stage-1 training feeds the model (`vasa_jax.trainers.latent.to_model_range`,
      # not imported: that module pulls in the training loop and its writers).
      images = frames.astype(jnp.float32) / 127.5 - 1.0
      z_pose, z_dyn = model.apply({"params": params}, images, method=model.encode_motion)
      return jnp.concatenate([z_pose, z_dyn], axis=-1).astype(jnp.float32)

    self._encode = jax.jit(encode, in_shardings=(replicated, self.batch_sharding),
                           out_shardings=self.batch_sharding)
    self._params = jax.device_put(encoder.params, replicated)

  def __call__(self, jpeg_frames: Sequence[bytes]) -> np.ndarray:
    """JPEG frames of one clip -> motion [T, 7 + dyn_dim]."""
    outputs = []
    for start in range(0, len(jpeg_frames), self.batch_size):
      frames = np.stack([input_pipeline.decode_frame(jpeg, self.image_size)
                         for jpeg in jpeg_frames[start:start + self.batch_size]])  # [b, S, S, 3]
      padding = self.batch_size - len(frames)
      frames = np.concatenate([frames, np.repeat(frames[-1:], padding, axis=0)])  # [B, S, S, 3]
      batch = jax.device_put(frames, self.batch_sharding)
      outputs.append((self._encode(self._params, batch), len(frames) - padding))
    return np.concatenate([np.asarray(motion)[:count] for motion, count in outputs])


# ----------------------------------------------------------------------------------------------
# Shards.
# ----------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class ShardTask:
  """One input shard and the clips (manifest entries, in read order) it holds."""
  split: str
  name: str  # file name, the same in the input and output directories
  clips: tuple[dict[str, Any], ...]


@dataclasses.dataclass(frozen=True)
class ExtractSummary:
  """What one `extract` run did: clips and frames of its shards (a task's share, or all);
  manifest_path None for a task of several (no manifest)."""
  manifest_path: str | None
  num_clips: int
  num_frames: int
  shards_extracted: int
  shards_reused: int
  seconds: float


def shard_tasks(data_dir: str, manifest: Mapping[str, Any]) -> list[ShardTask]:
  """Every shard of every split, with the manifest's clips cut by each shard's entry count."""
  tasks = []
  for split, contents in manifest["splits"].items():
    clips = contents["clips"]
    offset = 0
    for path in records.split_shard_paths(data_dir, manifest, split):
      num_entries, first = len(grain.sources.ArrayRecordDataSource([path])), offset
      while num_entries > 0 and offset < len(clips):
        num_entries -= records.num_clip_entries(clips[offset]["num_frames"])
        offset += 1
      if num_entries:
        raise ExtractionError(f"{path}: its entries do not add up to the clips the manifest "
                              "lists for it (stale directory?)")
      tasks.append(ShardTask(split, os.path.basename(path), tuple(clips[first:offset])))
    if offset != len(clips):
      raise ExtractionError(f"split {split!r} of {data_dir!r}: the shards hold {offset} clips "
                            f"but the manifest lists {len(clips)} (stale directory?)")
  return tasks


def shard_key(task: ShardTask, settings: Mapping[str, Any]) -> str:
  """A digest of a shard's clips and the settings that decide its content."""
  text = json.dumps({"shard": task.name, "clip_ids": [clip["clip_id"] for clip in task.clips],
                     "settings": settings}, sort_keys=True)
  return hashlib.sha256(text.encode("utf-8")).hexdigest()


def is_finished(shard_path: str, key: str) -> bool:
  """Whether an earlier run wrote this shard with the same key (sidecar written after it)."""
  try:
    with open(shard_path + SIDECAR_SUFFIX, encoding="utf-8") as f:
      return os.path.isfile(shard_path) and json.load(f).get("key") == key
  except (OSError, ValueError):
    return False


def _mark_finished(shard_path: str, key: str, task: ShardTask) -> None:
  sidecar_path = shard_path + SIDECAR_SUFFIX
  with open(sidecar_path + ".tmp", "w", encoding="utf-8") as f:
    json.dump({"key": key, "clip_ids": [clip["clip_id"] for clip in task.clips]}, f, indent=1)
  os.replace(sidecar_path + ".tmp", sidecar_path)


def _motion_records(input_path: str, task: ShardTask, encoder: MotionEncoder,
                    featurizer: speech_features.SpeechFeaturizer,
                    progress: tqdm.tqdm) -> Iterator[bytes]:
  """Encoded motion records of one input shard, in its order."""
  source = grain.sources.ArrayRecordDataSource([input_path])
  first_entries = records.clip_entry_offsets([entry["num_frames"] for entry in task.clips])
  for index, (entry, first_entry) in enumerate(zip(task.clips, first_entries)):
    clip = records.read_clip(source, int(first_entry))
    if clip["clip_id"] != entry["clip_id"] or float(clip["fps"]) != featurizer.fps:
      raise ExtractionError(
          f"{input_path} record {index} is clip {clip['clip_id']} at {clip['fps']} fps; the "
          f"manifest says {entry['clip_id']} at {featurizer.fps} fps (stale directory?)")
    num_frames = len(clip["frames"])
    motion = encoder(clip["frames"])  # [T, 7 + dyn_dim]
    waveform = clip["audio"].astype(np.float32) / 32768.0  # [N]
    audio_features = align_to_frames(featurizer(waveform), num_frames, clip["clip_id"])
    progress.update(num_frames)
    yield motion_records.encode_motion_record(motion_record(clip, motion, audio_features))


def check_dimensions(motion_config: ml_collections.ConfigDict, dyn_dim: int, audio_dim: int,
                     data_fps: float) -> None:
  """Raises ExtractionError when `--config` does not describe the motion shards being made."""
  motion_dim = motion_records.POSE_DIM + dyn_dim
  if motion_config.model.motion_dim != motion_dim:
    raise ExtractionError(
        f"config.model.motion_dim is {motion_config.model.motion_dim} but the stage-1 model "
        f"gives {motion_records.POSE_DIM} + dyn_dim {dyn_dim} = {motion_dim} "
        f"(set --config.model.motion_dim={motion_dim} or pick the matching config variant)")
  if motion_config.model.audio_dim != audio_dim:
    raise ExtractionError(
        f"config.model.audio_dim is {motion_config.model.audio_dim} but the "
        f"{motion_config.audio.features!r} speech features have {audio_dim} dimensions")
  if float(motion_config.fps) != float(data_fps):
    raise ExtractionError(f"the clips are at {data_fps} fps but config.fps is "
                          f"{motion_config.fps} (set --config.fps={data_fps})")


def extract(latent_checkpoint: str, shards_dir: str, output_dir: str,
            motion_config: ml_collections.ConfigDict, *, batch_size: int = DEFAULT_BATCH_SIZE,
            overwrite: bool = False, devices: Sequence[jax.Device] | None = None,
            num_tasks: int = 1, task_index: int = 0, merge: bool = False) -> ExtractSummary:
  """Writes the motion shards and manifest of every clip in `shards_dir` (see the module doc).

  With num_tasks > 1, only the input shards task_index, task_index + num_tasks, ... and no
  manifest; `merge` writes the manifest once every shard is finished (and extracts nothing).

  Raises FileNotFoundError / RecordFormatError for a bad input directory, CheckpointError for a
  bad stage-1 run and ExtractionError for settings that do not fit together (or a merge with
  shards missing, named).
  """
  started = time.perf_counter()
  if batch_size < 1:
    raise ExtractionError(f"--batch_size must be >= 1, got {batch_size}")
  if num_tasks < 1 or not 0 <= task_index < num_tasks:
    raise ExtractionError(f"need --num_tasks >= 1 and 0 <= --task_index < --num_tasks, got "
                          f"{num_tasks} and {task_index}")
  manifest = records.read_manifest(shards_dir)
  if manifest.get("record_kind", "clip") != "clip":
    raise ExtractionError(f"{shards_dir!r} holds {manifest['record_kind']!r} records, not clips")
  if os.path.realpath(shards_dir) == os.path.realpath(output_dir):
    raise ExtractionError("--output_dir must differ from --shards (shard names are shared)")
  tasks = shard_tasks(shards_dir, manifest)
  latent_encoder = load_latent_encoder(latent_checkpoint)
  fps = float(manifest["fps"])
  try:
    featurizer = speech_features.from_config(motion_config.audio, fps)
  except (ValueError, OSError) as error:  # e.g. no or a broken Wav2Vec2 directory
    raise ExtractionError(f"cannot build the speech features of config.audio: {error}"
                          ) from error
  check_dimensions(motion_config, latent_encoder.dyn_dim, featurizer.dim, fps)

  motion_entry = {"pose_dim": motion_records.POSE_DIM, "dyn_dim": latent_encoder.dyn_dim,
                  "motion_dim": motion_records.POSE_DIM + latent_encoder.dyn_dim,
                  "latent_checkpoint": latent_encoder.workdir, "latent_step": latent_encoder.step}
  audio_entry = dict(motion_config.audio.to_dict(), features=featurizer.kind, dim=featurizer.dim)
  content_settings = {"format_version": motion_records.MOTION_FORMAT_VERSION,
                      "latent_params_sha256": latent_encoder.digest(), "fps": fps,
                      "audio": audio_entry, "motion": {k: v for k, v in motion_entry.items()
                                                       if k != "latent_checkpoint"}}
  os.makedirs(output_dir, exist_ok=True)
  keys = {task.name: shard_key(task, content_settings) for task in tasks}
  if merge:
    missing = [task.name for task in tasks
               if not is_finished(os.path.join(output_dir, task.name), keys[task.name])]
    if missing:
      raise ExtractionError(records.unfinished_shards_message(
          missing, len(tasks), output_dir, "weights or settings"))
    mine, pending = tasks, []
  else:
    mine = tasks[task_index::num_tasks]
    pending = [task for task in mine if overwrite
               or not is_finished(os.path.join(output_dir, task.name), keys[task.name])]
  if pending:  # the directory is incomplete until the manifest is written again
    manifest_path = os.path.join(output_dir, records.MANIFEST_NAME)
    if os.path.exists(manifest_path):
      os.remove(manifest_path)
    encoder = MotionEncoder(latent_encoder, batch_size, devices)
    with tqdm.tqdm(total=sum(clip["num_frames"] for task in pending for clip in task.clips),
                   unit="frame", desc="extract_motion") as progress:
      for task in pending:
        output_path = os.path.join(output_dir, task.name)
        progress.set_postfix_str(task.name)
        records.write_shard(output_path, _motion_records(
            os.path.join(shards_dir, task.name), task, encoder, featurizer, progress))
        _mark_finished(output_path, keys[task.name], task)

  manifest_path = None
  if num_tasks == 1 or merge:
    output_manifest = {
        key: manifest[key] for key in ("source", "resolution", "fps", "audio_sample_rate",
                                       "splits", "num_inputs", "skipped", "skipped_examples")
        if key in manifest}
    output_manifest.update(
        record_kind=motion_records.RECORD_KIND,
        format_version=motion_records.MOTION_FORMAT_VERSION, motion=motion_entry,
        audio=audio_entry, settings={"clip_data_dir": os.path.abspath(shards_dir),
                                     "clip_settings": manifest.get("settings", {}),
                                     **content_settings})
    manifest_path = records.write_manifest(output_dir, output_manifest)
  return ExtractSummary(
      manifest_path=manifest_path,
      num_clips=sum(len(task.clips) for task in mine),
      num_frames=sum(clip["num_frames"] for task in mine for clip in task.clips),
      shards_extracted=len(pending), shards_reused=len(mine) - len(pending),
      seconds=time.perf_counter() - started)
