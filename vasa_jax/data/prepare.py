r"""Prepares real talking-head video as ArrayRecord shards of clip records (see vasa_jax/data/records.py).

  python -m data_prep.prepare --source=voxceleb2 --input_dir=/data/voxceleb2 \
      --output_dir=/data/vox_512 --resolution=512 --num_workers=8

Sources:
  voxceleb2  `{dev,test}/mp4/idXXXXX/<youtube_id>/NNNNN.mp4`; audio inside the mp4 or, for an
             mp4 without an audio stream, in the parallel
             `{dev,test}/aac/idXXXXX/<youtube_id>/NNNNN.m4a`.
             Speaker = the idXXXXX folder; dev -> split "train", test -> split "test".
  folder     any tree of videos (.mp4 .mov .mkv .avi .webm) with speaker = the top-level folder
             under --input_dir, or the rows (path,speaker_id[,split]) of --manifest_csv. Clips
             without a split go to "test" or "train" by a hash of their speaker id against
             --test_fraction, so the split is speaker-disjoint and the same on every run.

Each clip is decoded (frames resampled to --fps, audio to 16 kHz mono), filtered, face-tracked and
cropped by `vasa_jax.data.face_tracker`, and written as one record. Skipped clips are counted per reason
in the manifest: the tracker's reasons plus "too_short", "no_audio", "silent_audio", "undecodable".
With --emotion_weights (a converted HSEmotion classifier, `data_prep.convert_weights
--kind=emotion`) each written face crop's emotion scores (softmax over records.EMOTION_CLASSES) are
stored in the record's `emotion` annotation (`vasa_jax.data.face_emotion`); without, it is
[T, 0].

Work plan: each split's clips, sorted by clip id, are cut into shards of --clips_per_shard clips
before anything is decoded; a shard is the unit of work of a worker process. A finished shard is
`<split>-NNNNN-of-NNNNN.array_record` plus a sidecar `<shard>.json` that holds its results (records
written, skip counts, skipped examples) and a key of its clips and content settings. Both are
written atomically, the sidecar last, so a re-run skips every shard whose sidecar matches its key
and rebuilds the manifest from the sidecars alone. A shard whose clips were all skipped is still
written (empty) with its sidecar, so it is not redone, but it is left out of the manifest's shard
list, so readers never open an empty shard. The manifest is removed when a run has shards to make
and written last, so a directory with a manifest is complete.

Many machines: with --num_tasks=N, task --task_index=I (0 <= I < N) prepares the planned shards
I, I + N, I + 2N, ... (in plan order, every split's) and writes no manifest; each task resumes on
its own like a single run. `--merge` (same flags otherwise) then writes the manifest from the
sidecars, and refuses, naming the shards missing, until every task's shards exist.
"""

from __future__ import annotations

import concurrent.futures
import csv
import dataclasses
import hashlib
import json
import math
import multiprocessing
import os
from typing import Any, Iterable, Sequence

from absl import logging
import numpy as np
import tqdm

from vasa_jax.data import face_tracker
from vasa_jax.data import media
from vasa_jax.data import records

SOURCES = ("voxceleb2", "folder")
VIDEO_EXTENSIONS = (".mp4", ".mov", ".mkv", ".avi", ".webm")
# VoxCeleb2's own speaker-disjoint parts, and the split each one becomes.
VOXCELEB2_SPLITS = {"dev": "train", "test": "test"}
CLIP_SKIP_REASONS = ("too_short", "no_audio", "silent_audio", "undecodable")
SKIP_REASONS = tuple(face_tracker.SKIP_REASONS) + CLIP_SKIP_REASONS
MAX_SKIPPED_EXAMPLES = 20
SIDECAR_SUFFIX = ".json"
CSV_COLUMNS = ("path", "speaker_id")
# Splits come first in this order in the manifest; any other split names follow alphabetically.
SPLIT_ORDER = ("train", "test")
_TIME_EPSILON = 1e-6


class PrepareError(ValueError):
  """Bad flags or an input directory that does not hold what the source expects."""


@dataclasses.dataclass(frozen=True)
class PrepareConfig:
  """What to prepare and how; the fields are the command line flags.

  Attributes:
    source: "voxceleb2" or "folder".
    input_dir: the data set's root directory.
    output_dir: where shards, sidecars and manifest.json go (created if missing).
    resolution: side of the square face crops in pixels.
    fps: frame rate the video is resampled to.
    num_workers: worker processes (one face tracker each); 1 works in this process.
    clips_per_shard: input clips assigned to each shard.
    min_seconds: clips shorter than this (after aligning audio and video) are skipped.
    max_seconds: longer clips are cut to this length.
    test_fraction: share of speakers hashed into "test" where the source gives no split.
    manifest_csv: folder source only: a CSV with columns path,speaker_id[,split]; relative paths
      are relative to input_dir.
    silence_dbfs: clips whose audio RMS level is below this are skipped as silent.
    jpeg_quality: JPEG quality of the stored frames.
    num_tasks: independent tasks (machines, array jobs) that share the planned shards.
    task_index: which of them this run is, 0 <= task_index < num_tasks.
    merge: write the manifest of the shards all tasks made (and prepare nothing).
    emotion_weights: a converted emotion classifier (.npz) whose per-frame scores of the face
      crops are stored; None: no scores (`emotion` is [T, 0]).
  """
  source: str
  input_dir: str
  output_dir: str
  resolution: int = 512
  fps: float = 25.0
  num_workers: int = 2
  clips_per_shard: int = 64
  min_seconds: float = 1.0
  max_seconds: float = 20.0
  test_fraction: float = 0.05
  manifest_csv: str | None = None
  silence_dbfs: float = -50.0
  jpeg_quality: int = 90
  num_tasks: int = 1
  task_index: int = 0
  merge: bool = False
  emotion_weights: str | None = None


@dataclasses.dataclass(frozen=True)
class ClipSource:
  """One input clip.

  Attributes:
    clip_id: unique id, e.g. "id00012/abc123XYZ/00001".
    speaker_id: e.g. "id00012".
    split: "train", "test", or a split named by a manifest CSV.
    video_path: the video file, relative to input_dir (or absolute).
    fallback_audio_path: an audio file to use when the video has no audio stream (VoxCeleb2's
      parallel m4a), relative to input_dir; None if there is none.
  """
  clip_id: str
  speaker_id: str
  split: str
  video_path: str
  fallback_audio_path: str | None = None


@dataclasses.dataclass(frozen=True)
class ShardTask:
  """The clips assigned to one shard."""
  split: str
  index: int
  num_shards: int
  clips: tuple[ClipSource, ...]

  @property
  def name(self) -> str:
    return records.shard_name(self.split, self.index, self.num_shards)


# PrepareConfig fields that say which share of the work a run does: left out of the manifest's
# settings, so the manifest of a merge is that of a single run.
TASK_FIELDS = ("num_tasks", "task_index", "merge")


@dataclasses.dataclass(frozen=True)
class PrepareSummary:
  """What one `prepare` run did (a task of several writes no manifest: None)."""
  manifest_path: str | None
  manifest: dict[str, Any] | None
  shards_processed: int
  shards_reused: int


# ----------------------------------------------------------------------------------------------
# Finding the clips.
# ----------------------------------------------------------------------------------------------
def _sorted_subdirs(path: str) -> list[str]:
  return sorted(e.name for e in os.scandir(path) if e.is_dir() and not e.name.startswith("."))


def _sorted_files(path: str) -> list[str]:
  return sorted(e.name for e in os.scandir(path) if e.is_file() and not e.name.startswith("."))


def walk_voxceleb2(input_dir: str) -> list[ClipSource]:
  """Lists the clips of a VoxCeleb2 tree, pairing each mp4 with its m4a where there is one."""
  parts = [p for p in VOXCELEB2_SPLITS if os.path.isdir(os.path.join(input_dir, p, "mp4"))]
  if not parts:
    raise PrepareError(
        f"--input_dir {input_dir} does not have the VoxCeleb2 layout: expected "
        f"{os.path.join(input_dir, 'dev', 'mp4')}/idXXXXX/<youtube_id>/NNNNN.mp4 and/or "
        f"{os.path.join(input_dir, 'test', 'mp4')}/..., found neither dev/mp4 nor test/mp4")
  clips = []
  for part in parts:
    mp4_root = os.path.join(input_dir, part, "mp4")
    for speaker in _sorted_subdirs(mp4_root):
      for video in _sorted_subdirs(os.path.join(mp4_root, speaker)):
        for file_name in _sorted_files(os.path.join(mp4_root, speaker, video)):
          stem, extension = os.path.splitext(file_name)
          if extension.lower() != ".mp4":
            continue
          audio_path = f"{part}/aac/{speaker}/{video}/{stem}.m4a"
          clips.append(ClipSource(
              clip_id=f"{speaker}/{video}/{stem}", speaker_id=speaker,
              split=VOXCELEB2_SPLITS[part], video_path=f"{part}/mp4/{speaker}/{video}/{file_name}",
              fallback_audio_path=(
                  audio_path if os.path.isfile(os.path.join(input_dir, audio_path)) else None)))
  if not clips:
    raise PrepareError(
        f"--input_dir {input_dir} has {' and '.join(p + '/mp4' for p in parts)} but no clips at "
        "<part>/mp4/idXXXXX/<youtube_id>/NNNNN.mp4")
  return clips


def speaker_split(speaker_id: str, test_fraction: float) -> str:
  """"test" for a deterministic `test_fraction` of speaker ids (by hash), else "train"."""
  digest = hashlib.sha256(speaker_id.encode("utf-8")).digest()
  return "test" if int.from_bytes(digest[:8], "big") / 2**64 < test_fraction else "train"


def _is_video(file_name: str) -> bool:
  return os.path.splitext(file_name)[1].lower() in VIDEO_EXTENSIONS


def _clip_id_of_path(relative_path: str) -> str:
  return os.path.splitext(relative_path.replace(os.sep, "/"))[0].lstrip("/")


def walk_folder(input_dir: str, test_fraction: float) -> list[ClipSource]:
  """Lists the videos under input_dir; speaker = the top-level folder a video is in."""
  clips = []
  loose_videos = [name for name in _sorted_files(input_dir) if _is_video(name)]
  if loose_videos:
    raise PrepareError(
        f"--input_dir {input_dir} has videos directly inside it (e.g. {loose_videos[0]}): the "
        "folder source expects <input_dir>/<speaker>/.../<video>; move them into speaker folders "
        "or list them with --manifest_csv")
  for speaker in _sorted_subdirs(input_dir):
    for root, dirs, files in os.walk(os.path.join(input_dir, speaker)):
      dirs[:] = sorted(d for d in dirs if not d.startswith("."))
      for file_name in sorted(files):
        if _is_video(file_name) and not file_name.startswith("."):
          relative = os.path.relpath(os.path.join(root, file_name), input_dir).replace(os.sep, "/")
          clips.append(ClipSource(
              clip_id=_clip_id_of_path(relative), speaker_id=speaker,
              split=speaker_split(speaker, test_fraction), video_path=relative))
  if not clips:
    raise PrepareError(
        f"--input_dir {input_dir} holds no videos ({' '.join(VIDEO_EXTENSIONS)}) at "
        "<input_dir>/<speaker>/.../<video>")
  return clips


def read_manifest_csv(csv_path: str, input_dir: str, test_fraction: float) -> list[ClipSource]:
  """Lists the clips of a CSV with columns path,speaker_id[,split]."""
  if not os.path.isfile(csv_path):
    raise PrepareError(f"--manifest_csv {csv_path} does not exist")
  with open(csv_path, newline="", encoding="utf-8") as f:
    reader = csv.DictReader(f)
    missing = [c for c in CSV_COLUMNS if c not in (reader.fieldnames or ())]
    if missing:
      raise PrepareError(
          f"--manifest_csv {csv_path} lacks columns {missing}: expected a header row with "
          f"path,speaker_id[,split], got {reader.fieldnames}")
    rows = list(reader)
  clips, missing_files = [], []
  for line, row in enumerate(rows, start=2):
    path, speaker = (row["path"] or "").strip(), (row["speaker_id"] or "").strip()
    if not path or not speaker:
      raise PrepareError(f"--manifest_csv {csv_path} line {line}: empty path or speaker_id")
    split = (row.get("split") or "").strip() or speaker_split(speaker, test_fraction)
    if not split.replace("_", "").isalnum():
      raise PrepareError(
          f"--manifest_csv {csv_path} line {line}: split {split!r} is not a plain name")
    full_path = os.path.join(input_dir, path)
    if not os.path.isfile(full_path):
      missing_files.append(full_path)
    relative = os.path.relpath(full_path, input_dir)
    if relative.startswith(".."):
      relative = os.path.abspath(full_path)
    clips.append(ClipSource(clip_id=_clip_id_of_path(relative), speaker_id=speaker, split=split,
                            video_path=relative.replace(os.sep, "/")))
  if missing_files:
    raise PrepareError(
        f"--manifest_csv {csv_path} names {len(missing_files)} files that do not exist, e.g. "
        f"{missing_files[:3]} (relative paths are taken relative to --input_dir)")
  if not clips:
    raise PrepareError(f"--manifest_csv {csv_path} lists no clips")
  splits_of_speaker: dict[str, set[str]] = {}
  for clip in clips:
    splits_of_speaker.setdefault(clip.speaker_id, set()).add(clip.split)
  shared = sorted(s for s, splits in splits_of_speaker.items() if len(splits) > 1)
  if shared:
    logging.warning("--manifest_csv puts %d speakers in more than one split, e.g. %s",
                    len(shared), shared[:5])
  return clips


def find_clips(config: PrepareConfig) -> list[ClipSource]:
  """Checks the input flags and lists the clips the source holds."""
  if config.source not in SOURCES:
    raise PrepareError(f"--source must be one of {SOURCES}, got {config.source!r}")
  if not os.path.exists(config.input_dir):
    raise PrepareError(f"--input_dir {config.input_dir} does not exist")
  if not os.path.isdir(config.input_dir):
    raise PrepareError(f"--input_dir {config.input_dir} is not a directory")
  if config.manifest_csv and config.source != "folder":
    raise PrepareError("--manifest_csv is for --source=folder only")
  if config.source == "voxceleb2":
    clips = walk_voxceleb2(config.input_dir)
  elif config.manifest_csv:
    clips = read_manifest_csv(config.manifest_csv, config.input_dir, config.test_fraction)
  else:
    clips = walk_folder(config.input_dir, config.test_fraction)
  seen: dict[str, str] = {}
  for clip in clips:
    if clip.clip_id in seen:
      raise PrepareError(
          f"clip id {clip.clip_id} is given by both {seen[clip.clip_id]} and {clip.video_path}")
    seen[clip.clip_id] = clip.video_path
  return clips


def _check_settings(config: PrepareConfig) -> None:
  problems = []
  if config.resolution < 16:
    problems.append(f"--resolution must be at least 16, got {config.resolution}")
  if config.fps <= 0:
    problems.append(f"--fps must be positive, got {config.fps}")
  if config.num_workers < 1:
    problems.append(f"--num_workers must be at least 1, got {config.num_workers}")
  if config.clips_per_shard < 1:
    problems.append(f"--clips_per_shard must be at least 1, got {config.clips_per_shard}")
  if not 0 < config.min_seconds <= config.max_seconds:
    problems.append(
        f"need 0 < --min_seconds <= --max_seconds, got {config.min_seconds} and "
        f"{config.max_seconds}")
  if not 0 <= config.test_fraction <= 1:
    problems.append(f"--test_fraction must be in [0, 1], got {config.test_fraction}")
  if not 1 <= config.jpeg_quality <= 100:
    problems.append(f"--jpeg_quality must be in [1, 100], got {config.jpeg_quality}")
  if config.num_tasks < 1:
    problems.append(f"--num_tasks must be at least 1, got {config.num_tasks}")
  elif not 0 <= config.task_index < config.num_tasks:
    problems.append(f"--task_index must be in [0, {config.num_tasks - 1}] for --num_tasks="
                    f"{config.num_tasks}, got {config.task_index}")
  if config.emotion_weights and not os.path.isfile(config.emotion_weights):
    problems.append(f"--emotion_weights {config.emotion_weights} does not exist")
  if os.path.exists(config.output_dir) and not os.path.isdir(config.output_dir):
    problems.append(f"--output_dir {config.output_dir} exists and is not a directory")
  if problems:
    raise PrepareError("; ".join(problems))


# ----------------------------------------------------------------------------------------------
# Planning shards.
# ----------------------------------------------------------------------------------------------
def ordered_splits(splits: Iterable[str]) -> list[str]:
  """Split names in manifest order: train, test, then the others alphabetically."""
  splits = set(splits)
  return [s for s in SPLIT_ORDER if s in splits] + sorted(splits - set(SPLIT_ORDER))


def plan_shards(clips: Sequence[ClipSource], clips_per_shard: int) -> list[ShardTask]:
  """Assigns each split's clips, sorted by clip id, to consecutive shards."""
  tasks = []
  for split in ordered_splits(c.split for c in clips):
    split_clips = sorted((c for c in clips if c.split == split), key=lambda c: c.clip_id)
    num_shards = math.ceil(len(split_clips) / clips_per_shard)
    for index in range(num_shards):
      tasks.append(ShardTask(
          split=split, index=index, num_shards=num_shards,
          clips=tuple(split_clips[index * clips_per_shard:(index + 1) * clips_per_shard])))
  return tasks


def tracker_config(config: PrepareConfig) -> face_tracker.TrackerConfig:
  """The face tracker's settings: its defaults at the preparation's resolution."""
  return face_tracker.TrackerConfig(resolution=config.resolution)


def _file_digest(path: str) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as file:
    for block in iter(lambda: file.read(1 << 20), b""):
      digest.update(block)
  return digest.hexdigest()


def content_settings(config: PrepareConfig) -> dict[str, Any]:
  """The settings that change what a shard holds (a shard made with others is redone); the
  emotion classifier counts by its weights' digest."""
  settings = dict(
      format_version=records.RECORD_FORMAT_VERSION, source=config.source,
      resolution=config.resolution, fps=config.fps, min_seconds=config.min_seconds,
      max_seconds=config.max_seconds, silence_dbfs=config.silence_dbfs,
      jpeg_quality=config.jpeg_quality, tracker=dataclasses.asdict(tracker_config(config)))
  if config.emotion_weights:
    settings["emotion_weights_sha256"] = _file_digest(config.emotion_weights)
  return settings


def make_emotion_scorer(config: PrepareConfig) -> Any:
  """The emotion classifier of --emotion_weights (a `face_emotion.EmotionScorer`), or None."""
  if not config.emotion_weights:
    return None
  from vasa_jax.data import face_emotion  # pylint: disable=g-import-not-at-top  (JAX, on demand)
  return face_emotion.EmotionScorer(config.emotion_weights)


def shard_key(task: ShardTask, config: PrepareConfig) -> str:
  """A digest of a shard's clips and the content settings."""
  text = json.dumps(dict(clips=[dataclasses.asdict(c) for c in task.clips],
                         settings=content_settings(config)), sort_keys=True)
  return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _sidecar_path(shard_path: str) -> str:
  return shard_path + SIDECAR_SUFFIX


def load_finished_shard(task: ShardTask, config: PrepareConfig) -> dict[str, Any] | None:
  """The results of a shard finished by an earlier run with the same clips and settings."""
  shard_path = os.path.join(config.output_dir, task.name)
  sidecar_path = _sidecar_path(shard_path)
  if not (os.path.isfile(shard_path) and os.path.isfile(sidecar_path)):
    return None
  try:
    with open(sidecar_path, encoding="utf-8") as f:
      result = json.load(f)
  except (OSError, ValueError) as e:
    logging.warning("redoing %s: cannot read its sidecar (%s)", task.name, e)
    return None
  if result.get("key") != shard_key(task, config):
    logging.warning("redoing %s: it was made from other clips or settings", task.name)
    return None
  return result


# ----------------------------------------------------------------------------------------------
# Preparing clips and shards.
# ----------------------------------------------------------------------------------------------
def _read_clip_audio(clip: ClipSource, video: media.VideoClip, config: PrepareConfig
                    ) -> np.ndarray:
  try:
    return media.read_audio(os.path.join(config.input_dir, clip.video_path),
                            records.AUDIO_SAMPLE_RATE, start_time=video.start_time)
  except media.NoAudioError:
    if clip.fallback_audio_path is None:
      raise
    return media.read_audio(os.path.join(config.input_dir, clip.fallback_audio_path),
                            records.AUDIO_SAMPLE_RATE)


def prepare_clip(clip: ClipSource, config: PrepareConfig, tracker: face_tracker.FaceTracker,
                 emotion_scorer: Any = None) -> tuple[dict[str, Any] | None, str | None]:
  """Decodes, filters and tracks one clip (and scores its crops' emotion with `emotion_scorer`,
  crops uint8 [T, R, R, 3] -> [T, 8], when given).

  Returns:
    (record, None) for a kept clip, (None, skip reason) for a skipped one.
  """
  video_path = os.path.join(config.input_dir, clip.video_path)
  min_frames = math.ceil(config.min_seconds * config.fps - _TIME_EPSILON)
  try:
    video = media.read_video(video_path, config.fps, max_seconds=config.max_seconds)
  except media.MediaError as e:
    logging.warning("skipping undecodable clip %s: %s", clip.clip_id, e)
    return None, "undecodable"
  if len(video.frames) < min_frames:
    return None, "too_short"
  try:
    audio = _read_clip_audio(clip, video, config)
  except media.NoAudioError:
    return None, "no_audio"
  except media.MediaError as e:
    logging.warning("skipping clip %s with undecodable audio: %s", clip.clip_id, e)
    return None, "undecodable"
  samples_per_frame = records.AUDIO_SAMPLE_RATE / config.fps
  num_frames = min(len(video.frames), math.floor(len(audio) / samples_per_frame + _TIME_EPSILON))
  if num_frames < min_frames:
    return None, "too_short"
  frames = video.frames[:num_frames]
  audio = audio[:round(num_frames * samples_per_frame)]
  if media.is_silent(audio, config.silence_dbfs):
    return None, "silent_audio"
  track = tracker.track_clip(frames, config.fps)
  if track.skip_reason is not None:
    return None, track.skip_reason
  annotations = dict(track.annotations)
  if emotion_scorer is not None:
    annotations.update(emotion=emotion_scorer(track.crops), emotion_available=True)  # [T, 8]
  record = dict(
      format_version=records.RECORD_FORMAT_VERSION, clip_id=clip.clip_id,
      speaker_id=clip.speaker_id, source=config.source, source_path=clip.video_path,
      fps=float(config.fps), resolution=int(config.resolution),
      frames=[media.encode_jpeg(crop, config.jpeg_quality) for crop in track.crops],
      audio=np.round(audio * np.iinfo(np.int16).max).astype(np.int16),
      audio_sample_rate=records.AUDIO_SAMPLE_RATE, annotations=annotations)
  return record, None


def process_shard(task: ShardTask, config: PrepareConfig, tracker: face_tracker.FaceTracker,
                  emotion_scorer: Any = None) -> dict[str, Any]:
  """Prepares one shard's clips, writes the shard and its sidecar, returns the sidecar's dict."""
  kept = []
  skipped = {reason: 0 for reason in SKIP_REASONS}
  skipped_examples: dict[str, list[str]] = {reason: [] for reason in SKIP_REASONS}

  def encoded_records():
    for clip in task.clips:
      try:
        record, reason = prepare_clip(clip, config, tracker, emotion_scorer)
      except Exception as e:
        raise RuntimeError(f"preparing clip {clip.clip_id} ({clip.video_path}) failed") from e
      if reason is None:
        kept.append(dict(clip_id=clip.clip_id, speaker_id=clip.speaker_id,
                         num_frames=len(record["frames"])))
        yield from records.encode_clip(record)
      else:
        skipped[reason] = skipped.get(reason, 0) + 1
        examples = skipped_examples.setdefault(reason, [])
        if len(examples) < MAX_SKIPPED_EXAMPLES:
          examples.append(clip.video_path)

  shard_path = os.path.join(config.output_dir, task.name)
  records.write_shard(shard_path, encoded_records())
  result = dict(key=shard_key(task, config), shard=task.name, split=task.split,
                num_inputs=len(task.clips), records=kept, skipped=skipped,
                skipped_examples=skipped_examples)
  sidecar_path = _sidecar_path(shard_path)
  with open(sidecar_path + ".tmp", "w", encoding="utf-8") as f:
    json.dump(result, f, indent=1)
  os.replace(sidecar_path + ".tmp", sidecar_path)
  return result


# The worker process's state: set once per process by `_init_worker`.
_worker_config: PrepareConfig | None = None
_worker_tracker: face_tracker.FaceTracker | None = None
_worker_emotion_scorer: Any = None


def _init_worker(config: PrepareConfig) -> None:
  global _worker_config, _worker_tracker, _worker_emotion_scorer
  _worker_config = config
  _worker_tracker = face_tracker.FaceTracker(tracker_config(config))
  _worker_emotion_scorer = make_emotion_scorer(config)


def _process_shard_in_worker(task: ShardTask) -> dict[str, Any]:
  return process_shard(task, _worker_config, _worker_tracker, _worker_emotion_scorer)


def _run_shards(tasks: Sequence[ShardTask], config: PrepareConfig) -> Iterable[dict[str, Any]]:
  """Processes shards, in worker processes if asked to; yields results as they finish."""
  if config.num_workers == 1 or len(tasks) == 1:
    tracker = face_tracker.FaceTracker(tracker_config(config))
    emotion_scorer = make_emotion_scorer(config)
    for task in tasks:
      yield process_shard(task, config, tracker, emotion_scorer)
    return
  # Spawned workers: this process has imported JAX (through flax), which must not be forked. A
  # worker that dies (e.g. out of memory) fails the run instead of hanging it.
  executor = concurrent.futures.ProcessPoolExecutor(
      max_workers=min(config.num_workers, len(tasks)),
      mp_context=multiprocessing.get_context("spawn"), initializer=_init_worker,
      initargs=(config,))
  try:
    futures = [executor.submit(_process_shard_in_worker, task) for task in tasks]
    for future in concurrent.futures.as_completed(futures):
      yield future.result()
  finally:
    executor.shutdown(cancel_futures=True)


def build_manifest(tasks: Sequence[ShardTask], results: dict[str, dict[str, Any]],
                   config: PrepareConfig) -> dict[str, Any]:
  """The manifest of a finished directory, from the shard results (keyed by shard name)."""
  splits: dict[str, dict[str, list]] = {}
  skipped = {reason: 0 for reason in SKIP_REASONS}
  skipped_examples: dict[str, list[str]] = {reason: [] for reason in SKIP_REASONS}
  for task in tasks:
    result = results[task.name]
    split = splits.setdefault(task.split, dict(shards=[], clips=[]))
    if result["records"]:
      split["shards"].append(task.name)
      split["clips"].extend(result["records"])
    for reason, count in result["skipped"].items():
      skipped[reason] = skipped.get(reason, 0) + count
    for reason, examples in result["skipped_examples"].items():
      kept = skipped_examples.setdefault(reason, [])
      kept.extend(examples[:MAX_SKIPPED_EXAMPLES - len(kept)])
  settings = {name: value for name, value in dataclasses.asdict(config).items()
              if name not in TASK_FIELDS}
  settings.update(input_dir=os.path.abspath(config.input_dir),
                  output_dir=os.path.abspath(config.output_dir),
                  tracker=dataclasses.asdict(tracker_config(config)))
  return dict(
      source=config.source, resolution=config.resolution, fps=config.fps,
      audio_sample_rate=records.AUDIO_SAMPLE_RATE, splits=splits,
      num_inputs=sum(len(task.clips) for task in tasks), skipped=skipped,
      skipped_examples=skipped_examples, settings=settings)


def _write_manifest(tasks: Sequence[ShardTask], results: dict[str, dict[str, Any]],
                    config: PrepareConfig) -> tuple[str, dict[str, Any]]:
  manifest = build_manifest(tasks, results, config)
  manifest_path = records.write_manifest(config.output_dir, manifest)
  for split, contents in manifest["splits"].items():
    logging.info("split %s: %d clips in %d shards", split, len(contents["clips"]),
                 len(contents["shards"]))
    if not contents["clips"]:
      logging.warning("split %s has no clips: every one of its inputs was skipped", split)
  logging.info("skipped: %s", {r: n for r, n in manifest["skipped"].items() if n})
  return manifest_path, manifest


def merge(config: PrepareConfig, tasks: Sequence[ShardTask]) -> PrepareSummary:
  """Writes the manifest once every planned shard is finished; raises PrepareError naming the
  shards that are not."""
  results = {task.name: load_finished_shard(task, config) for task in tasks}
  missing = [task.name for task in tasks if results[task.name] is None]
  if missing:
    raise PrepareError(records.unfinished_shards_message(missing, len(tasks), config.output_dir,
                                                         "flags"))
  manifest_path, manifest = _write_manifest(tasks, results, config)
  return PrepareSummary(manifest_path=manifest_path, manifest=manifest, shards_processed=0,
                        shards_reused=len(tasks))


def prepare(config: PrepareConfig) -> PrepareSummary:
  """Prepares (or finishes preparing) `config.output_dir`'s shards, all of them or this task's
  share, and writes its manifest (single runs and --merge)."""
  _check_settings(config)
  clips = find_clips(config)
  tasks = plan_shards(clips, config.clips_per_shard)
  os.makedirs(config.output_dir, exist_ok=True)
  planned = {task.name for task in tasks}
  stale = sorted(name for name in os.listdir(config.output_dir)
                 if name.endswith(".array_record") and name not in planned)
  if stale:
    logging.warning("%s holds %d shards this run does not plan (left alone, not in the "
                    "manifest), e.g. %s", config.output_dir, len(stale), stale[:3])
  if config.merge:
    return merge(config, tasks)

  mine = tasks[config.task_index::config.num_tasks]
  results = {}
  pending = []
  for task in mine:
    result = load_finished_shard(task, config)
    if result is None:
      pending.append(task)
    else:
      results[task.name] = result
  share = (f"task {config.task_index} of {config.num_tasks}: " if config.num_tasks > 1 else "")
  logging.info("%s%d clips in %d shards: %d shards already done, %d to prepare with %d workers",
               share, sum(len(t.clips) for t in mine), len(mine), len(results), len(pending),
               config.num_workers)
  if pending:
    # The directory is incomplete until the manifest is written again.
    manifest_path = os.path.join(config.output_dir, records.MANIFEST_NAME)
    if os.path.exists(manifest_path):
      os.remove(manifest_path)
    with tqdm.tqdm(total=sum(len(t.clips) for t in pending), unit="clip",
                   desc="preparing") as progress:
      for result in _run_shards(pending, config):
        results[result["shard"]] = result
        progress.update(result["num_inputs"])

  if config.num_tasks > 1:
    logging.info("%sits %d shards are done; run with --merge once every task has finished",
                 share, len(mine))
    return PrepareSummary(manifest_path=None, manifest=None, shards_processed=len(pending),
                          shards_reused=len(mine) - len(pending))
  manifest_path, manifest = _write_manifest(tasks, results, config)
  return PrepareSummary(manifest_path=manifest_path, manifest=manifest,
                        shards_processed=len(pending), shards_reused=len(tasks) - len(pending))
