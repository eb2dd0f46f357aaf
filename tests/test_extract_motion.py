"""data_prep.extract_motion: records and manifest, encoder and audio agreement, gaze clustering,
devices, resuming, and clear errors."""

import json
import os
import shutil
import subprocess
import sys

import grain
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import latent as latent_config
from configs import motion as motion_config_lib
from vasa_jax.data import extract_motion
from tests import fake_clips
from vasa_jax.data import input_pipeline
from vasa_jax.data import motion_records
from vasa_jax.data import records
from vasa_jax.data import speech_features
from vasa_jax.models import autoencoder as autoencoder_lib
from vasa_jax.trainers import latent as latent_trainer
from vasa_jax.training import checkpoint
from vasa_jax.training import loop
from vasa_jax.training import sharding as sharding_lib

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BATCH_SIZE = 8


def _write_split(path, split, clip_records, clips_per_shard):
  num_shards = -(-len(clip_records) // clips_per_shard)
  names = [records.shard_name(split, shard, num_shards) for shard in range(num_shards)]
  for shard, name in enumerate(names):
    chunk = clip_records[shard * clips_per_shard:(shard + 1) * clips_per_shard]
    records.write_shard(os.path.join(path, name), [e for r in chunk for e in records.encode_clip(r)])
  return {"shards": names, "clips": [
      {"clip_id": r["clip_id"], "speaker_id": r["speaker_id"], "num_frames": len(r["frames"])}
      for r in clip_records]}


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
  """train: 3 speakers x 3 clips in shards of 4 (4, 4, 1); test: 2 clips of a 4th speaker.

  Clips have 9..20 frames (some over one batch of 8); clip 1 carries ground truth and clip 2 a
  track of 8 emotion scores.
  """
  path = str(tmp_path_factory.mktemp("clips"))
  clip_records = [fake_clips.make_record(n, f"spk{n // 3}", 9 + (n * 5) % 12) for n in range(11)]
  clip_records[1]["ground_truth"] = {"factors": np.arange(2 * 14, dtype=np.float32)}
  clip_records[2]["annotations"]["emotion"] = np.random.default_rng(0).dirichlet(
      np.ones(8), size=len(clip_records[2]["frames"])).astype(np.float32)
  clip_records[2]["annotations"]["emotion_available"] = True
  splits = {"train": _write_split(path, "train", clip_records[:9], 4),
            "test": _write_split(path, "test", clip_records[9:], 4)}
  records.write_manifest(path, dict(
      source="synthtalk", resolution=16, fps=25.0, audio_sample_rate=records.AUDIO_SAMPLE_RATE,
      splits=splits, num_inputs=11, skipped={}, skipped_examples={}, settings={"seed": 0}))
  return path, clip_records


@pytest.fixture(scope="module")
def latent_workdir(tmp_path_factory, clip_dir):
  """A tiny stage-1 run's checkpoint (initial weights; EMA weights scaled to differ)."""
  workdir = str(tmp_path_factory.mktemp("latent"))
  config = latent_config.get_config("tiny")
  config.data_dir = clip_dir[0]
  config.eval_every_steps = 0  # no evaluation batch (the test split has one speaker)
  task = latent_trainer.make_task(config, 0, 1)
  mesh = sharding_lib.create_mesh({"data": 1, "fsdp": 1, "model": 1}, jax.devices()[:1])
  state = loop.initial_state(task, config, mesh)[2]()
  state = state.replace(ema_generator=jax.tree.map(lambda p: p * 0.9, state.generator))
  checkpoint.write_config(workdir, config)
  checkpointer = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"), max_to_keep=1,
                                         save_interval_steps=1)
  checkpointer.save(0, state, task.train_iterator, force=True)
  checkpointer.wait_until_finished()
  checkpointer.close()
  return workdir


def tiny_motion_config():
  return motion_config_lib.get_config("tiny")


@pytest.fixture(scope="module")
def extracted(tmp_path_factory, clip_dir, latent_workdir):
  """Motion shards made on all 8 test devices."""
  output_dir = str(tmp_path_factory.mktemp("motion"))
  summary = extract_motion.extract(latent_workdir, clip_dir[0], output_dir, tiny_motion_config(),
                                   batch_size=BATCH_SIZE)
  return output_dir, summary


def read_motion_shards(output_dir):
  """{clip_id: motion record} of every shard the manifest lists."""
  manifest = records.read_manifest(output_dir)
  result = {}
  for split in manifest["splits"]:
    for path in records.split_shard_paths(output_dir, manifest, split):
      source = grain.sources.ArrayRecordDataSource([path])
      for index in range(len(source)):
        record = motion_records.decode_motion_record(source[index])
        result[record["clip_id"]] = record
  return result


def test_manifest_and_records_follow_the_input(clip_dir, extracted):
  input_dir, clip_records = clip_dir
  output_dir, summary = extracted
  input_manifest = records.read_manifest(input_dir)
  manifest = records.read_manifest(output_dir)
  assert manifest["splits"] == input_manifest["splits"]
  assert manifest["record_kind"] == "motion"
  assert manifest["motion"] == {"pose_dim": 7, "dyn_dim": 16, "motion_dim": 23,
                                "latent_checkpoint": manifest["motion"]["latent_checkpoint"],
                                "latent_step": 0}
  assert manifest["audio"]["features"] == "log_mel" and manifest["audio"]["dim"] == 40
  assert (summary.num_clips, summary.shards_extracted, summary.shards_reused) == (11, 4, 0)

  motion_by_clip = read_motion_shards(output_dir)
  # Read order: the stage-2 pipeline reads the directory with the manifest's clip list.
  assert [r["clip_id"] for r in input_pipeline.split_records(output_dir, "train")] == [
      clip["clip_id"] for clip in input_manifest["splits"]["train"]["clips"]]
  for clip in clip_records:
    record = motion_by_clip[clip["clip_id"]]
    num_frames = len(clip["frames"])
    assert record["num_frames"] == num_frames and record["fps"] == 25.0
    assert record["motion"].shape == (num_frames, 23) and record["motion"].dtype == np.float32
    assert record["audio_features"].shape == (num_frames, 40)
    assert record["audio_features"].dtype == np.float16
    np.testing.assert_array_equal(record["audio"], clip["audio"])
    np.testing.assert_array_equal(record["gaze"], clip["annotations"]["gaze"])
    np.testing.assert_array_equal(record["head_pose"], clip["annotations"]["head_pose"])
    assert record["distance_main"] == 1.0 and record["distance_main"].shape == ()
    np.testing.assert_allclose(record["emotion"], clip["annotations"]["emotion"].mean(0),
                               rtol=1e-6)
    assert ("ground_truth" in record) == ("ground_truth" in clip)
  assert motion_by_clip[clip_records[2]["clip_id"]]["emotion"].shape == (8,)
  assert motion_by_clip[clip_records[0]["clip_id"]]["emotion"].shape == (0,)
  np.testing.assert_array_equal(motion_by_clip[clip_records[1]["clip_id"]]["ground_truth"]
                                ["factors"], clip_records[1]["ground_truth"]["factors"])


def test_motion_and_audio_match_direct_computation(clip_dir, latent_workdir, extracted):
  config, state, _ = checkpoint.restore_for_inference(latent_workdir, "latent")
  model = autoencoder_lib.FaceAutoencoder.from_config(config.model)
  featurizer = speech_features.from_config(tiny_motion_config().audio, 25.0)
  motion_by_clip = read_motion_shards(extracted[0])
  clips = clip_dir[1][::5]
  # Every checked clip's frames in one batch (one compilation), split back per clip.
  frames = np.stack([input_pipeline.decode_frame(jpeg, 64)
                     for clip in clips for jpeg in clip["frames"]])  # [sum T, 64, 64, 3]
  ends = np.cumsum([len(clip["frames"]) for clip in clips])[:-1]

  @jax.jit
  def direct_motion(params):
    z_pose, z_dyn = model.apply({"params": params}, latent_trainer.to_model_range(frames),
                                method=model.encode_motion)
    return jnp.concatenate([z_pose, z_dyn], axis=-1)

  ema_motion = np.split(direct_motion(state["ema_generator"]), ends)
  raw_motion = np.split(direct_motion(state["generator"]), ends)
  for clip, expected_motion, generator_motion in zip(clips, ema_motion, raw_motion):
    record = motion_by_clip[clip["clip_id"]]
    np.testing.assert_allclose(record["motion"], expected_motion, atol=1e-4)
    # The EMA weights, not the raw generator's.
    assert not np.allclose(record["motion"], generator_motion, atol=1e-3)
    expected = featurizer(clip["audio"] / 32768.0).astype(np.float16)
    np.testing.assert_array_equal(record["audio_features"], expected)


def test_batch_is_sharded_over_devices_and_one_device_agrees(
    tmp_path, clip_dir, latent_workdir, extracted):
  assert len(jax.devices()) == 8
  encoder = extract_motion.MotionEncoder(
      extract_motion.load_latent_encoder(latent_workdir), batch_size=5)
  assert encoder.batch_size == 8  # rounded up to the device count
  assert encoder.batch_sharding.mesh.devices.size == 8
  extract_motion.extract(latent_workdir, clip_dir[0], str(tmp_path), tiny_motion_config(),
                         batch_size=BATCH_SIZE, devices=jax.devices()[:1])
  one_device = read_motion_shards(str(tmp_path))
  for clip_id, record in read_motion_shards(extracted[0]).items():
    np.testing.assert_allclose(one_device[clip_id]["motion"], record["motion"], atol=1e-5)


def test_main_gaze_direction_finds_the_dominant_cluster():
  rng = np.random.default_rng(0)
  main = rng.normal([5.0, -3.0], 1.0, size=(70, 2))
  other = rng.normal([-20.0, 10.0], 1.0, size=(30, 2))
  gaze = np.concatenate([other[:15], main, other[15:]])
  centre = extract_motion.main_gaze_direction(gaze)
  assert centre.shape == (2,) and centre.dtype == np.float32
  np.testing.assert_allclose(centre, [5.0, -3.0], atol=0.5)
  assert np.linalg.norm(gaze.mean(0) - [5.0, -3.0]) > 5.0  # the plain mean misses it
  np.testing.assert_array_equal(extract_motion.main_gaze_direction(gaze), centre)
  np.testing.assert_allclose(extract_motion.main_gaze_direction(np.ones((1, 2))), [1.0, 1.0])


def test_align_to_frames_pads_crops_and_rejects():
  features = np.arange(12, dtype=np.float32).reshape(4, 3)
  np.testing.assert_array_equal(extract_motion.align_to_frames(features, 3, "c"), features[:3])
  padded = extract_motion.align_to_frames(features, 5, "c")
  np.testing.assert_array_equal(padded, np.concatenate([features, features[-1:]]))
  with pytest.raises(extract_motion.ExtractionError, match="clip c: .* 4 feature frames for 6"):
    extract_motion.align_to_frames(features, 6, "c")


def test_rerun_redoes_only_missing_shards(tmp_path, clip_dir, latent_workdir, extracted):
  output_dir = str(tmp_path / "motion")
  shutil.copytree(extracted[0], output_dir)
  shard_paths = {name: os.path.join(output_dir, name) for name in os.listdir(output_dir)
                 if name.endswith(".array_record")}
  contents = {name: open(path, "rb").read() for name, path in shard_paths.items()}
  # Older mtimes, so a rewrite would show.
  for path in shard_paths.values():
    os.utime(path, (1e9, 1e9))
  removed = "train-00001-of-00003.array_record"
  os.remove(shard_paths[removed])

  summary = extract_motion.extract(latent_workdir, clip_dir[0], output_dir, tiny_motion_config(),
                                   batch_size=BATCH_SIZE)
  assert (summary.shards_extracted, summary.shards_reused) == (1, 3)
  for name, path in shard_paths.items():
    assert open(path, "rb").read() == contents[name], name
    assert (os.path.getmtime(path) == 1e9) == (name != removed), name
  with open(os.path.join(output_dir, removed + ".json"), encoding="utf-8") as f:
    assert len(json.load(f)["clip_ids"]) == 4
  assert records.read_manifest(output_dir) == records.read_manifest(extracted[0])

  summary = extract_motion.extract(latent_workdir, clip_dir[0], output_dir, tiny_motion_config(),
                                   batch_size=BATCH_SIZE, overwrite=True)
  assert (summary.shards_extracted, summary.shards_reused) == (4, 0)
  assert all(os.path.getmtime(path) != 1e9 for path in shard_paths.values())


def test_clear_errors(tmp_path, clip_dir, latent_workdir):
  output_dir = str(tmp_path / "out")
  config = tiny_motion_config()
  with pytest.raises(FileNotFoundError, match="does not exist"):
    extract_motion.extract(latent_workdir, str(tmp_path / "nowhere"), output_dir, config)
  os.makedirs(tmp_path / "empty")
  with pytest.raises(FileNotFoundError, match="no manifest.json"):
    extract_motion.extract(latent_workdir, str(tmp_path / "empty"), output_dir, config)
  with pytest.raises(checkpoint.CheckpointError, match="config.json"):
    extract_motion.extract(str(tmp_path / "empty"), clip_dir[0], output_dir, config)
  with pytest.raises(extract_motion.ExtractionError, match="must differ"):
    extract_motion.extract(latent_workdir, clip_dir[0], clip_dir[0], config)

  # A config.json describing another model than the checkpoint's weights.
  other_workdir = str(tmp_path / "other_latent")
  shutil.copytree(latent_workdir, other_workdir)
  latent = checkpoint.read_config(other_workdir)
  latent.model.dyn_dim = 8
  checkpoint.write_config(other_workdir, latent)
  with pytest.raises(checkpoint.CheckpointError, match="does not fit the model"):
    extract_motion.extract(other_workdir, clip_dir[0], output_dir, config)

  assert not os.path.exists(os.path.join(output_dir, "manifest.json"))
  # (motion_dim: through the command line below.)
  config.model.audio_dim = 41
  with pytest.raises(extract_motion.ExtractionError, match="audio_dim is 41 .* 40"):
    extract_motion.check_dimensions(config, dyn_dim=16, audio_dim=40, data_fps=25.0)
  config.model.audio_dim = 40
  with pytest.raises(extract_motion.ExtractionError, match="--config.fps=30"):
    extract_motion.check_dimensions(config, dyn_dim=16, audio_dim=40, data_fps=30.0)


def test_cli_exits_with_the_message(tmp_path, clip_dir, latent_workdir):
  result = subprocess.run(
      [sys.executable, "-m", "data_prep.extract_motion", f"--latent_checkpoint={latent_workdir}",
       f"--shards={clip_dir[0]}", f"--output_dir={tmp_path}",
       "--config=configs/motion.py:tiny", "--config.model.motion_dim=30"],
      cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=False)
  assert result.returncode != 0
  assert "error: config.model.motion_dim is 30" in result.stderr
  assert "7 + dyn_dim 16 = 23" in result.stderr and "Traceback" not in result.stderr


def test_three_tasks_and_a_merge_make_the_single_run_directory(
    tmp_path, clip_dir, latent_workdir, extracted):
  output_dir = str(tmp_path / "motion")
  manifest_path = os.path.join(output_dir, records.MANIFEST_NAME)
  # In manifest order: task 0 takes train-0 and test-0, task 1 train-1, task 2 train-2.
  shard_names = ["train-00000-of-00003.array_record", "train-00001-of-00003.array_record",
                 "train-00002-of-00003.array_record", "test-00000-of-00001.array_record"]
  for task_index in range(3):
    summary = extract_motion.extract(latent_workdir, clip_dir[0], output_dir,
                                     tiny_motion_config(), batch_size=BATCH_SIZE, num_tasks=3,
                                     task_index=task_index)
    assert summary.manifest_path is None and not os.path.exists(manifest_path)
    assert summary.shards_extracted == len(shard_names[task_index::3])
    if task_index < 2:
      missing = [name for i, name in enumerate(shard_names) if i % 3 > task_index]
      with pytest.raises(extract_motion.ExtractionError,
                         match=rf"--merge: {len(missing)} of the 4 shards") as error:
        extract_motion.extract(latent_workdir, clip_dir[0], output_dir, tiny_motion_config(),
                               merge=True)
      assert all(name in str(error.value) for name in missing)
      assert not any(name in str(error.value) for name in set(shard_names) - set(missing))
  summary = extract_motion.extract(latent_workdir, clip_dir[0], output_dir, tiny_motion_config(),
                                   merge=True)
  assert (summary.shards_extracted, summary.shards_reused, summary.num_clips) == (0, 4, 11)
  assert records.read_manifest(output_dir) == records.read_manifest(extracted[0])
  for name in shard_names:
    with open(os.path.join(extracted[0], name), "rb") as f:
      single_bytes = f.read()
    with open(os.path.join(output_dir, name), "rb") as f:
      assert f.read() == single_bytes, name  # the same records, byte for byte
