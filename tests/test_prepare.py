"""Tests for data_prep.prepare: input walkers, speaker splits, shard plans, and a full preparation.

The end-to-end test builds a small VoxCeleb2 tree of real H.264/AAC files whose frames are
SynthTalk faces (so dlib finds them), prepares it with two worker processes, checks the shards and
the manifest against what each clip was made to be, and re-runs preparation to check it resumes.
"""

import dataclasses
import json
import logging
import os
import random

import jax
import numpy as np
import pytest

from vasa_jax.data import face_emotion
from vasa_jax.data import face_tracker
from vasa_jax.data import media
from vasa_jax.data import prepare
from vasa_jax.data.synthtalk import render as synthtalk_render
from vasa_jax.data import records
from vasa_jax.models import emotion
from vasa_jax.models import pretrained


def touch(root, relative_path):
  path = os.path.join(root, relative_path)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "wb"):
    pass


def test_walk_voxceleb2_layout(tmp_path):
  for path in ["dev/mp4/id00012/abcDEF/00001.mp4", "dev/mp4/id00012/abcDEF/00002.mp4",
               "dev/aac/id00012/abcDEF/00002.m4a", "dev/mp4/id00015/zz_9/00003.mp4",
               "dev/mp4/id00015/zz_9/notes.txt", "dev/aac/id00015/zz_9/00099.m4a",
               "test/mp4/id00020/qqq/00001.mp4", "test/aac/id00020/qqq/00001.m4a"]:
    touch(tmp_path, path)
  clips = prepare.walk_voxceleb2(str(tmp_path))
  assert clips == [
      prepare.ClipSource("id00012/abcDEF/00001", "id00012", "train",
                         "dev/mp4/id00012/abcDEF/00001.mp4", None),
      prepare.ClipSource("id00012/abcDEF/00002", "id00012", "train",
                         "dev/mp4/id00012/abcDEF/00002.mp4", "dev/aac/id00012/abcDEF/00002.m4a"),
      prepare.ClipSource("id00015/zz_9/00003", "id00015", "train",
                         "dev/mp4/id00015/zz_9/00003.mp4", None),
      prepare.ClipSource("id00020/qqq/00001", "id00020", "test",
                         "test/mp4/id00020/qqq/00001.mp4", "test/aac/id00020/qqq/00001.m4a"),
  ]


def test_walk_voxceleb2_test_part_only(tmp_path):
  touch(tmp_path, "test/mp4/id00020/qqq/00001.mp4")
  assert [c.split for c in prepare.walk_voxceleb2(str(tmp_path))] == ["test"]


def test_bad_input_and_output_dirs_are_named(tmp_path):
  config = prepare.PrepareConfig(source="voxceleb2", input_dir=str(tmp_path / "missing"),
                                 output_dir=str(tmp_path / "out"))
  with pytest.raises(prepare.PrepareError, match="--input_dir .*missing does not exist"):
    prepare.prepare(config)
  touch(tmp_path, "videos/spk/a.mp4")
  config = dataclasses.replace(config, input_dir=str(tmp_path / "videos"))
  with pytest.raises(prepare.PrepareError, match=r"VoxCeleb2 layout: expected .*dev/mp4/idXXXXX"):
    prepare.prepare(config)
  touch(tmp_path, "empty_vox/dev/mp4/id00001/notes.txt")
  with pytest.raises(prepare.PrepareError, match="has dev/mp4 but no clips"):
    prepare.prepare(dataclasses.replace(config, input_dir=str(tmp_path / "empty_vox")))
  touch(tmp_path, "a_file")
  with pytest.raises(prepare.PrepareError, match="--output_dir .*a_file exists and is not a dir"):
    prepare.prepare(dataclasses.replace(config, source="folder",
                                        output_dir=str(tmp_path / "a_file")))
  with pytest.raises(prepare.PrepareError, match="--clips_per_shard must be at least 1"):
    prepare.prepare(dataclasses.replace(config, source="folder", clips_per_shard=0))
  touch(tmp_path, "flat/a.mp4")
  with pytest.raises(prepare.PrepareError, match="videos directly inside it"):
    prepare.prepare(dataclasses.replace(config, source="folder",
                                        input_dir=str(tmp_path / "flat")))
  assert not os.path.exists(tmp_path / "out")


def test_folder_speakers_and_split_are_disjoint_and_deterministic(tmp_path):
  speakers = [f"person_{i:02d}" for i in range(40)]
  for speaker in speakers:
    touch(tmp_path, f"{speaker}/talk1/part_a.mp4")
    touch(tmp_path, f"{speaker}/talk2.MOV")
    touch(tmp_path, f"{speaker}/cover.jpg")
  clips = prepare.walk_folder(str(tmp_path), test_fraction=0.25)
  assert len(clips) == 80
  assert {c.speaker_id for c in clips} == set(speakers)
  by_id = {c.clip_id: c for c in clips}
  assert by_id["person_00/talk1/part_a"] == prepare.ClipSource(
      "person_00/talk1/part_a", "person_00", by_id["person_00/talk1/part_a"].split,
      "person_00/talk1/part_a.mp4")
  assert by_id["person_07/talk2"].video_path == "person_07/talk2.MOV"
  split_of = {}
  for clip in clips:
    assert split_of.setdefault(clip.speaker_id, clip.split) == clip.split
  test_speakers = {s for s, split in split_of.items() if split == "test"}
  assert 4 <= len(test_speakers) <= 18  # About 10 of 40.
  assert prepare.walk_folder(str(tmp_path), test_fraction=0.25) == clips
  assert all(prepare.speaker_split(s, 0.0) == "train" for s in speakers)
  assert all(prepare.speaker_split(s, 1.0) == "test" for s in speakers)


def test_manifest_csv_splits(tmp_path):
  for name in ["a/1.mp4", "a/2.mp4", "b/1.mp4", "c/1.webm"]:
    touch(tmp_path, f"videos/{name}")
  csv_path = tmp_path / "clips.csv"
  csv_path.write_text("path,speaker_id,split\n"
                      "a/1.mp4,alice,\n"
                      "a/2.mp4,alice,\n"
                      "b/1.mp4,bob,test\n"
                      f"{tmp_path}/videos/c/1.webm,carol,valid\n")
  clips = prepare.read_manifest_csv(str(csv_path), str(tmp_path / "videos"), test_fraction=0.5)
  assert [(c.clip_id, c.speaker_id, c.split) for c in clips] == [
      ("a/1", "alice", prepare.speaker_split("alice", 0.5)),
      ("a/2", "alice", prepare.speaker_split("alice", 0.5)),
      ("b/1", "bob", "test"),
      ("c/1", "carol", "valid"),
  ]
  csv_path.write_text("file,speaker\na/1.mp4,alice\n")
  with pytest.raises(prepare.PrepareError, match=r"lacks columns \['path', 'speaker_id'\]"):
    prepare.read_manifest_csv(str(csv_path), str(tmp_path / "videos"), 0.5)
  csv_path.write_text("path,speaker_id\na/1.mp4,alice\nmissing.mp4,dan\n")
  with pytest.raises(prepare.PrepareError, match="1 files that do not exist.*missing.mp4"):
    prepare.read_manifest_csv(str(csv_path), str(tmp_path / "videos"), 0.5)


def test_plan_shards_is_deterministic():
  clips = [prepare.ClipSource(f"spk{i % 3}/v/{i:05d}", f"spk{i % 3}",
                              "test" if i % 3 == 2 else "train", f"{i}.mp4") for i in range(14)]
  shuffled = clips[:]
  random.Random(0).shuffle(shuffled)
  tasks = prepare.plan_shards(shuffled, clips_per_shard=3)
  assert tasks == prepare.plan_shards(clips, clips_per_shard=3)
  assert [t.name for t in tasks] == [
      "train-00000-of-00004.array_record", "train-00001-of-00004.array_record",
      "train-00002-of-00004.array_record", "train-00003-of-00004.array_record",
      "test-00000-of-00002.array_record", "test-00001-of-00002.array_record"]
  train_ids = [c.clip_id for t in tasks[:4] for c in t.clips]
  assert train_ids == sorted(c.clip_id for c in clips if c.split == "train")
  assert [len(t.clips) for t in tasks] == [3, 3, 3, 1, 3, 1]


# ----------------------------------------------------------------------------------------------
# End to end: a small VoxCeleb2 tree of generated talking faces.
# ----------------------------------------------------------------------------------------------
SOURCE_SIZE = 160
SECONDS = 1.6
MAX_SECONDS = 1.2  # Every kept clip is cut to 30 frames at 25 fps.
RESOLUTION = 128
CLIPS_PER_SHARD = 2
# VoxCeleb2 clip -> (what it is made to be, audio tone in Hz). Sorted by clip id, shards of two:
#   train-0: aaa/1, aaa/2   train-1: bbb/1, ccc/1   train-2: ccc/2, ddd/1 (all skipped)
#   test-0:  eee/1, eee/2   test-1:  fff/1 (all skipped)
CLIPS = {
    "dev/id00001/aaaaaaaaaaa/00001": ("audio_in_mp4", 220.0),
    "dev/id00001/aaaaaaaaaaa/00002": ("audio_in_m4a", 330.0),
    "dev/id00001/bbbbbbbbbbb/00001": ("two_faces", 250.0),
    "dev/id00002/ccccccccccc/00001": ("30_fps", 440.0),
    "dev/id00002/ccccccccccc/00002": ("truncated", 200.0),
    "dev/id00002/ddddddddddd/00001": ("no_audio", 0.0),
    "test/id00003/eeeeeeeeeee/00001": ("audio_in_m4a", 550.0),
    "test/id00003/eeeeeeeeeee/00002": ("silent", 0.0),
    "test/id00003/fffffffffff/00001": ("too_short", 300.0),
}
KEPT = {"train": ["id00001/aaaaaaaaaaa/00001", "id00001/aaaaaaaaaaa/00002",
                  "id00002/ccccccccccc/00001"],
        "test": ["id00003/eeeeeeeeeee/00001"]}
EXPECTED_SKIPS = {"multiple_faces": ["dev/mp4/id00001/bbbbbbbbbbb/00001.mp4"],
                  "undecodable": ["dev/mp4/id00002/ccccccccccc/00002.mp4"],
                  "no_audio": ["dev/mp4/id00002/ddddddddddd/00001.mp4"],
                  "silent_audio": ["test/mp4/id00003/eeeeeeeeeee/00002.mp4"],
                  "too_short": ["test/mp4/id00003/fffffffffff/00001.mp4"]}


def talking_frames(identity, num_frames, rng):
  """A head that talks (mouth), nods a little and blinks; each render is held for 4 frames."""
  frames = []
  phase = rng.uniform(0, 2 * np.pi)
  for start in range(0, num_frames, 4):
    t = start / 25.0 + phase
    image = synthtalk_render.render(identity, {
        "mouth_open": 0.5 + 0.4 * np.sin(7 * t), "yaw": 8 * np.sin(t),
        "pitch": 4 * np.sin(1.3 * t), "blink": float(start % 40 == 20)}, SOURCE_SIZE)
    frames.extend([image] * min(4, num_frames - start))
  return np.stack(frames)


def tone(frequency, seconds, sample_rate):
  t = np.arange(round(seconds * sample_rate)) / sample_rate
  return (0.3 * np.sin(2 * np.pi * frequency * t)).astype(np.float32)


def detectable_identity(rng, tracker):
  """A random SynthTalk identity whose face the tracker finds (a few percent are missed)."""
  while True:
    identity = synthtalk_render.sample_identity(rng)
    image = synthtalk_render.render(identity, {"mouth_open": 0.5}, SOURCE_SIZE)
    if tracker.track_image(image).skip_reason is None:
      return identity


def build_voxceleb2_tree(root):
  rng = np.random.default_rng(7)
  tracker = face_tracker.FaceTracker(face_tracker.TrackerConfig(resolution=RESOLUTION))
  identities = {speaker: detectable_identity(rng, tracker)
                for speaker in ("id00001", "id00002", "id00003", "other")}
  for name, (kind, frequency) in CLIPS.items():
    part, speaker, video, number = name.split("/")
    mp4 = os.path.join(root, part, "mp4", speaker, video, number + ".mp4")
    os.makedirs(os.path.dirname(mp4), exist_ok=True)
    fps = 30.0 if kind == "30_fps" else 25.0
    seconds = 0.6 if kind == "too_short" else SECONDS
    frames = talking_frames(identities[speaker], round(seconds * fps), rng)
    if kind == "two_faces":
      frames = np.concatenate([frames, talking_frames(identities["other"], len(frames), rng)],
                              axis=2)
    audio = tone(frequency, seconds, 16_000)
    if kind in ("audio_in_m4a", "no_audio"):
      audio = None
    elif kind == "silent":
      audio = np.zeros_like(audio)
    media.write_video(mp4, frames, fps, audio)
    if kind == "audio_in_m4a":
      m4a = os.path.join(root, part, "aac", speaker, video, number + ".m4a")
      os.makedirs(os.path.dirname(m4a), exist_ok=True)
      media.write_audio(m4a, tone(frequency, seconds, 44_100), 44_100)
    if kind == "truncated":
      with open(mp4, "rb") as f:
        data = f.read()
      with open(mp4, "wb") as f:
        f.write(data[:len(data) // 2])


def peak_frequency(audio, sample_rate):
  spectrum = np.abs(np.fft.rfft(audio * np.hanning(len(audio))))
  return np.argmax(spectrum) * sample_rate / len(audio)


def file_times(directory):
  return {name: os.stat(os.path.join(directory, name)).st_mtime_ns
          for name in sorted(os.listdir(directory))}


@pytest.fixture(name="prepared", scope="module")
def fixture_prepared(tmp_path_factory):
  """The generated tree, prepared once with two worker processes."""
  root = tmp_path_factory.mktemp("prepare")
  input_dir, output_dir = str(root / "voxceleb2"), str(root / "prepared")
  build_voxceleb2_tree(input_dir)
  config = prepare.PrepareConfig(
      source="voxceleb2", input_dir=input_dir, output_dir=output_dir, resolution=RESOLUTION,
      num_workers=2, clips_per_shard=CLIPS_PER_SHARD, max_seconds=MAX_SECONDS)
  summary = prepare.prepare(config)
  return config, summary


def test_prepare_voxceleb2_tree(prepared):
  config, summary = prepared
  assert (summary.shards_processed, summary.shards_reused) == (5, 0)
  manifest = records.read_manifest(config.output_dir)
  assert manifest == json.loads(json.dumps(summary.manifest, default=str)) | {
      "format_version": records.RECORD_FORMAT_VERSION}
  assert manifest["source"] == "voxceleb2"
  assert (manifest["resolution"], manifest["fps"], manifest["audio_sample_rate"]) == (
      RESOLUTION, 25.0, 16_000)
  assert manifest["num_inputs"] == len(CLIPS)
  assert manifest["skipped"] == {reason: len(EXPECTED_SKIPS.get(reason, []))
                                 for reason in prepare.SKIP_REASONS}
  assert manifest["skipped_examples"] == {reason: EXPECTED_SKIPS.get(reason, [])
                                          for reason in prepare.SKIP_REASONS}
  # Shards whose clips were all skipped exist (so they are not redone) but are not listed.
  assert manifest["splits"]["train"]["shards"] == [
      "train-00000-of-00003.array_record", "train-00001-of-00003.array_record"]
  assert manifest["splits"]["test"]["shards"] == ["test-00000-of-00002.array_record"]
  for name in ("train-00002-of-00003.array_record", "test-00001-of-00002.array_record"):
    assert records.read_shard(os.path.join(config.output_dir, name)) == []
  assert manifest["settings"]["max_seconds"] == MAX_SECONDS

  num_frames = round(MAX_SECONDS * 25)
  for split, clip_ids in KEPT.items():
    assert manifest["splits"][split]["clips"] == [
        {"clip_id": clip_id, "speaker_id": clip_id.split("/")[0], "num_frames": num_frames}
        for clip_id in clip_ids]
    shard_paths = records.split_shard_paths(config.output_dir, manifest, split)
    clip_records = [r for path in shard_paths for r in records.read_shard(path)]
    assert [r["clip_id"] for r in clip_records] == clip_ids
    for record in clip_records:
      part = "dev" if split == "train" else "test"
      name = f"{part}/{record['clip_id']}"
      assert record["source"] == "voxceleb2"
      assert record["source_path"] == f"{part}/mp4/{record['clip_id']}.mp4"
      assert (record["fps"], record["resolution"], record["audio_sample_rate"]) == (
          25.0, RESOLUTION, 16_000)
      assert len(record["frames"]) == num_frames
      assert media.decode_jpeg(record["frames"][0]).shape == (RESOLUTION, RESOLUTION, 3)
      audio = record["audio"]
      assert audio.dtype == np.int16 and audio.shape == (num_frames * 640,)
      # The tone of the clip's own audio, from the mp4 or from the m4a beside it.
      assert peak_frequency(audio.astype(np.float32), 16_000) == pytest.approx(
          CLIPS[name][1], abs=2)
      level = np.sqrt(np.mean((audio[1000:-1000] / 32767) ** 2))
      assert level == pytest.approx(0.3 / np.sqrt(2), rel=0.1)
      annotations = record["annotations"]
      assert annotations["face_found"].all()
      # The face is inside the crop, around its middle.
      landmarks = annotations["landmarks"]
      assert (landmarks > 0).all() and (landmarks < RESOLUTION).all()
      assert np.abs(landmarks.mean(axis=(0, 1)) / RESOLUTION - 0.5).max() < 0.15
      assert annotations["emotion_available"] is False


def test_prepare_resumes_without_redoing_finished_shards(prepared, monkeypatch, caplog):
  config, first = prepared
  before = file_times(config.output_dir)

  def must_not_decode(*args, **kwargs):
    raise AssertionError(f"a finished preparation decoded media: {args}")

  # A second run finds every shard finished: no decoding, no tracking, no file but the manifest
  # rewritten, the same manifest.
  with monkeypatch.context() as patch:
    patch.setattr(media, "read_video", must_not_decode)
    patch.setattr(media, "read_audio", must_not_decode)
    patch.setattr(face_tracker, "FaceTracker", must_not_decode)
    second = prepare.prepare(config)
  assert (second.shards_processed, second.shards_reused) == (0, 5)
  assert second.manifest == first.manifest
  after = file_times(config.output_dir)
  assert {n: t for n, t in after.items() if n != records.MANIFEST_NAME} == {
      n: t for n, t in before.items() if n != records.MANIFEST_NAME}

  # Without its sidecar a shard counts as unfinished: only its two clips are decoded again.
  decoded = []
  read_video = media.read_video

  def counting_read_video(path, *args, **kwargs):
    decoded.append(os.path.relpath(path, config.input_dir))
    return read_video(path, *args, **kwargs)

  os.remove(os.path.join(config.output_dir, "train-00002-of-00003.array_record.json"))
  monkeypatch.setattr(media, "read_video", counting_read_video)
  with caplog.at_level(logging.WARNING):
    third = prepare.prepare(config)
  assert sorted(decoded) == ["dev/mp4/id00002/ccccccccccc/00002.mp4",
                             "dev/mp4/id00002/ddddddddddd/00001.mp4"]
  assert (third.shards_processed, third.shards_reused) == (1, 4)
  assert third.manifest == first.manifest
  # The undecodable clip is logged with its path.
  assert "ccccccccccc/00002.mp4: truncated" in caplog.text
  assert file_times(config.output_dir)["train-00000-of-00003.array_record"] == before[
      "train-00000-of-00003.array_record"]


def test_prepare_folder_source_from_csv(prepared, tmp_path):
  vox_config, _ = prepared
  mp4_dir = os.path.join(vox_config.input_dir, "dev", "mp4")
  csv_path = tmp_path / "clips.csv"
  csv_path.write_text("path,speaker_id,split\n"
                      "id00001/aaaaaaaaaaa/00001.mp4,alice,valid\n"
                      "id00001/aaaaaaaaaaa/00002.mp4,alice,valid\n"  # m4a beside it: unused.
                      "id00002/ccccccccccc/00001.mp4,bob,\n")
  config = prepare.PrepareConfig(
      source="folder", input_dir=mp4_dir, output_dir=str(tmp_path / "out"),
      resolution=RESOLUTION, num_workers=1, max_seconds=MAX_SECONDS, test_fraction=1.0,
      manifest_csv=str(csv_path))
  manifest = prepare.prepare(config).manifest
  assert list(manifest["splits"]) == ["test", "valid"]
  assert manifest["splits"]["valid"]["clips"] == [
      {"clip_id": "id00001/aaaaaaaaaaa/00001", "speaker_id": "alice", "num_frames": 30}]
  assert manifest["splits"]["test"]["clips"] == [
      {"clip_id": "id00002/ccccccccccc/00001", "speaker_id": "bob", "num_frames": 30}]
  assert manifest["skipped"]["no_audio"] == 1
  (record,) = records.read_shard(
      os.path.join(config.output_dir, "valid-00000-of-00001.array_record"))
  assert (record["source"], record["source_path"]) == ("folder", "id00001/aaaaaaaaaaa/00001.mp4")


def test_tracker_failure_names_the_clip_and_leaves_no_shard(prepared, tmp_path, monkeypatch):
  vox_config, _ = prepared

  class BrokenTracker:
    def __init__(self, config):
      del config

    def track_clip(self, frames, fps):
      raise ValueError(f"cannot track {frames.shape} at {fps}")

  monkeypatch.setattr(face_tracker, "FaceTracker", BrokenTracker)
  config = dataclasses.replace(vox_config, output_dir=str(tmp_path / "out"), num_workers=1)
  with pytest.raises(RuntimeError, match="clip id00001/aaaaaaaaaaa/00001 .*00001.mp4"):
    prepare.prepare(config)
  assert not [n for n in os.listdir(config.output_dir) if n.endswith((".array_record", ".json"))]


def test_three_tasks_and_a_merge_make_the_single_run_directory(prepared, tmp_path):
  single, _ = prepared
  config = dataclasses.replace(single, output_dir=str(tmp_path / "tasks"), num_workers=1,
                               num_tasks=3)
  shard_names = [task.name for task in prepare.plan_shards(
      prepare.find_clips(single), single.clips_per_shard)]
  assert len(shard_names) == 5  # task 0: shards 0 and 3; task 1: 1 and 4; task 2: 2
  for task_index in range(3):
    summary = prepare.prepare(dataclasses.replace(config, task_index=task_index))
    assert summary.manifest is None and summary.shards_processed == len(
        shard_names[task_index::3])
    assert not os.path.exists(os.path.join(config.output_dir, records.MANIFEST_NAME))
    if task_index < 2:
      # Refused, naming the shards the tasks still to run make.
      with pytest.raises(prepare.PrepareError, match=r"--merge: \d of the 5 shards are not finished") as e:
        prepare.prepare(dataclasses.replace(config, merge=True))
      missing = [name for i, name in enumerate(shard_names) if i % 3 > task_index]
      assert all(name in str(e.value) for name in missing)
      assert not any(name in str(e.value) for name in set(shard_names) - set(missing))
  # A task run again has nothing to do.
  assert prepare.prepare(dataclasses.replace(config, task_index=1)).shards_processed == 0
  merged = prepare.prepare(dataclasses.replace(config, merge=True))
  single_manifest = records.read_manifest(single.output_dir)
  assert records.read_manifest(config.output_dir) == dict(
      single_manifest, settings=dict(single_manifest["settings"], output_dir=config.output_dir,
                                     num_workers=1))
  assert merged.manifest["splits"] == single_manifest["splits"]
  for name in shard_names:
    with open(os.path.join(single.output_dir, name), "rb") as f:
      single_bytes = f.read()
    with open(os.path.join(config.output_dir, name), "rb") as f:
      assert f.read() == single_bytes, name  # the same records, byte for byte


def test_emotion_weights_store_each_crops_scores(prepared, tmp_path):
  vox_config, _ = prepared
  model = emotion.EmotionNet()
  variables = jax.jit(model.init)(jax.random.key(0), *[
      np.zeros(x.shape, x.dtype) for x in model.example_inputs()])
  weights = str(tmp_path / "emotion.npz")
  pretrained.save_variables(weights, variables, model)
  mp4_dir = os.path.join(vox_config.input_dir, "dev", "mp4")
  csv_path = tmp_path / "clips.csv"
  csv_path.write_text("path,speaker_id,split\nid00002/ccccccccccc/00001.mp4,bob,test\n")
  config = prepare.PrepareConfig(
      source="folder", input_dir=mp4_dir, output_dir=str(tmp_path / "out"),
      resolution=RESOLUTION, num_workers=1, max_seconds=MAX_SECONDS, manifest_csv=str(csv_path),
      emotion_weights=weights)
  manifest = prepare.prepare(config).manifest
  assert manifest["settings"]["emotion_weights"] == weights
  (record,) = records.read_shard(os.path.join(config.output_dir, "test-00000-of-00001.array_record"))
  scores = record["annotations"]["emotion"]
  assert record["annotations"]["emotion_available"] is True
  assert scores.shape == (len(record["frames"]), 8) and scores.dtype == np.float32
  np.testing.assert_allclose(scores.sum(-1), 1.0, atol=1e-5)
  # The scores are the classifier's on the crops (here re-scored from the stored JPEGs).
  crops = np.stack([media.decode_jpeg(frame) for frame in record["frames"]])
  np.testing.assert_allclose(scores, face_emotion.EmotionScorer(weights)(crops), atol=2e-3)
  # Other weights are other content: the shard is redone, not reused.
  other = prepare.PrepareConfig(**{**dataclasses.asdict(config), "emotion_weights": None})
  assert prepare.shard_key(prepare.plan_shards(prepare.find_clips(other), 64)[0], other) != (
      prepare.shard_key(prepare.plan_shards(prepare.find_clips(config), 64)[0], config))
  bad = prepare.PrepareConfig(**{**dataclasses.asdict(config),
                                 "emotion_weights": str(tmp_path / "missing.npz")})
  with pytest.raises(prepare.PrepareError, match="--emotion_weights .*missing.npz does not exist"):
    prepare.prepare(bad)
