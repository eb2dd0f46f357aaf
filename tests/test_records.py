"""The clip record format: validation, round trip, atomic shards."""

import os

import numpy as np
import pytest
from flax import serialization

from tests import fake_clips
from vasa_jax.data import input_pipeline
from vasa_jax.data import records


def test_round_trip_keeps_dtypes_and_shapes(tmp_path):
  record = fake_clips.make_record(3, "spk0", num_frames=5)
  path = str(tmp_path / records.shard_name("train", 0, 1))
  assert records.write_shard(path, records.encode_clip(record) * 2) == 2 * (5 + 2)
  restored = records.read_shard(path)
  assert len(restored) == 2
  annotations = restored[0]["annotations"]
  assert annotations["landmarks"].shape == (5, 68, 2)
  assert annotations["face_found"].dtype == bool
  assert restored[0]["audio"].dtype == np.int16
  assert restored[0]["frames"] == record["frames"]


def test_invalid_records_are_refused_naming_the_field():
  record = fake_clips.make_record(0, "spk0", num_frames=4)
  record["annotations"]["head_pose"] = np.zeros((3, 3), np.float32)
  with pytest.raises(records.RecordFormatError, match=r"head_pose.*\(3, 3\), expected \(4, 3\)"):
    records.encode_clip(record)
  record["annotations"]["head_pose"] = np.zeros((4, 3), np.float32)
  record["annotations"]["emotion"] = np.zeros((4, 2), np.float32)
  with pytest.raises(records.RecordFormatError, match=r"'emotion'.*\(4, 2\), expected \(4, 0\) "
                     r"or \(4, 8\)"):
    records.encode_clip(record)
  record["annotations"]["emotion"] = np.full((4, 8), 0.125, np.float32)
  with pytest.raises(records.RecordFormatError, match="emotion_available is False"):
    records.encode_clip(record)
  record["annotations"]["emotion_available"] = True
  records.encode_clip(record)
  del record["audio"]
  with pytest.raises(records.RecordFormatError, match="audio"):
    records.encode_clip(record)


def test_failed_shard_write_leaves_no_file(tmp_path):
  path = str(tmp_path / "train-00000-of-00001.array_record")

  def failing_records():
    yield from records.encode_clip(fake_clips.make_record(0, "spk0", num_frames=2))
    raise RuntimeError("decoder crashed")

  with pytest.raises(RuntimeError, match="decoder crashed"):
    records.write_shard(path, failing_records())
  assert os.listdir(tmp_path) == []


def test_a_clip_is_a_header_its_audio_and_one_entry_per_frame():
  record = fake_clips.make_record(1, "spk0", num_frames=3)
  entries = records.encode_clip(record)
  assert len(entries) == records.num_clip_entries(3) == 5
  header = records.decode_header(entries[0])
  assert header["num_frames"] == 3 and "frames" not in header and "audio" not in header
  np.testing.assert_array_equal(records.decode_audio(entries[1]), record["audio"])
  assert entries[2:] == record["frames"]  # the JPEG bytes as they are
  np.testing.assert_array_equal(records.clip_entry_offsets([3, 1, 4]), [0, 5, 8])
  without_frames = records.read_clip(entries, 0, with_frames=False)
  assert "frames" not in without_frames and without_frames["clip_id"] == record["clip_id"]


OLD_FORMAT = (r"clip record format 1; this code reads format 2 .* re-run "
              r"`python -m data_prep.prepare` or `python -m data_prep.synthtalk`")


def test_directories_of_the_old_format_are_refused_saying_what_to_rerun(tmp_path):
  """Format 1: one msgpack document per clip, frames inside, and a manifest of version 1."""
  old_record = dict(fake_clips.make_record(0, "spk0", num_frames=4), format_version=1)
  shard = str(tmp_path / records.shard_name("train", 0, 1))
  records.write_shard(shard, [serialization.msgpack_serialize(old_record)])
  with pytest.raises(records.RecordFormatError, match=OLD_FORMAT):
    records.read_shard(shard)
  records.write_manifest(str(tmp_path), dict(
      format_version=1, source="synthtalk", resolution=16, fps=25.0, splits={"train": {
          "shards": [os.path.basename(shard)],
          "clips": [{"clip_id": old_record["clip_id"], "speaker_id": "spk0", "num_frames": 4}]}}))
  with pytest.raises(records.RecordFormatError, match=OLD_FORMAT):
    input_pipeline.stage1_iterator(str(tmp_path), "train", batch_size=1, image_size=16, seed=0)
