"""The clip record format: validation, round trip, atomic shards."""

import os

import numpy as np
import pytest

from tests import fake_clips
from vasa_jax.data import records


def test_round_trip_keeps_dtypes_and_shapes(tmp_path):
  record = fake_clips.make_record(3, "spk0", num_frames=5)
  path = str(tmp_path / records.shard_name("train", 0, 1))
  assert records.write_shard(path, [records.encode_record(record)] * 2) == 2
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
    records.encode_record(record)
  del record["audio"]
  with pytest.raises(records.RecordFormatError, match="audio"):
    records.encode_record(record)


def test_failed_shard_write_leaves_no_file(tmp_path):
  path = str(tmp_path / "train-00000-of-00001.array_record")

  def failing_records():
    yield records.encode_record(fake_clips.make_record(0, "spk0", num_frames=2))
    raise RuntimeError("decoder crashed")

  with pytest.raises(RuntimeError, match="decoder crashed"):
    records.write_shard(path, failing_records())
  assert os.listdir(tmp_path) == []
