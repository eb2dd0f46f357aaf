"""Small hand-made prepared data directories whose frames say which clip and frame they are."""

import io
import os

import numpy as np
from PIL import Image

from vasa_jax.data import records


def frame_image(clip_number: int, frame: int, size: int) -> np.ndarray:
  """A flat image: red = 10 * clip number, green = 4 * frame (so decoding recovers both)."""
  image = np.zeros((size, size, 3), np.uint8)
  image[..., 0] = 10 * clip_number
  image[..., 1] = 4 * frame
  image[..., 2] = 128
  return image


def identify_frame(image: np.ndarray) -> tuple[int, int]:
  """Inverse of `frame_image` (robust to JPEG error)."""
  return int(round(image[..., 0].mean() / 10)), int(round(image[..., 1].mean() / 4))


def make_record(clip_number: int, speaker: str, num_frames: int, size: int = 16,
                fps: float = 25.0) -> dict:
  frames = []
  for frame in range(num_frames):
    buffer = io.BytesIO()
    Image.fromarray(frame_image(clip_number, frame, size)).save(buffer, "JPEG", quality=95)
    frames.append(buffer.getvalue())
  samples_per_frame = int(records.AUDIO_SAMPLE_RATE / fps)
  # Audio sample value encodes the frame it belongs to.
  audio = np.repeat(np.arange(num_frames, dtype=np.int16) + 1, samples_per_frame) * 100
  frame_numbers = np.arange(num_frames, dtype=np.float32)
  return dict(
      format_version=records.RECORD_FORMAT_VERSION,
      clip_id=f"{speaker}/clip/{clip_number:05d}", speaker_id=speaker, source="synthtalk",
      source_path="", fps=fps, resolution=size, frames=frames, audio=audio,
      audio_sample_rate=records.AUDIO_SAMPLE_RATE,
      annotations=dict(
          landmarks=np.zeros((num_frames, 68, 2), np.float32),
          # yaw = frame number, pitch = clip number: lets tests check alignment.
          head_pose=np.stack([frame_numbers, np.full(num_frames, clip_number, np.float32),
                              np.ones(num_frames, np.float32)], axis=1),
          gaze=np.stack([frame_numbers, -frame_numbers], axis=1),
          distance=np.ones(num_frames, np.float32),
          crop_box=np.tile(np.array([size / 2, size / 2, size], np.float32), (num_frames, 1)),
          face_found=np.ones(num_frames, bool),
          emotion=np.zeros((num_frames, 0), np.float32),
          emotion_available=False))


def make_data_dir(path: str, clips_per_speaker: int = 4, num_speakers: int = 3,
                  num_frames=lambda clip_number: 20, clips_per_shard: int = 5,
                  split: str = "train", test_speakers: int = 0) -> list[dict]:
  """Writes shards + manifest; returns the records in read order (`split`'s, then "test"'s).

  Clip n is clip n % clips_per_speaker of speaker n // clips_per_speaker; the last
  `test_speakers` speakers go to split "test", the others to `split`.
  """
  os.makedirs(path, exist_ok=True)
  all_records, splits = [], {}
  for split_name, speakers in ((split, range(num_speakers - test_speakers)),
                               ("test", range(num_speakers - test_speakers, num_speakers))):
    split_records = [make_record(speaker * clips_per_speaker + clip, f"spk{speaker}",
                                 num_frames(speaker * clips_per_speaker + clip))
                     for speaker in speakers for clip in range(clips_per_speaker)]
    if not split_records:
      continue
    num_shards = -(-len(split_records) // clips_per_shard)
    names = []
    for shard in range(num_shards):
      name = records.shard_name(split_name, shard, num_shards)
      chunk = split_records[shard * clips_per_shard:(shard + 1) * clips_per_shard]
      records.write_shard(os.path.join(path, name),
                          [entry for r in chunk for entry in records.encode_clip(r)])
      names.append(name)
    splits[split_name] = dict(shards=names, clips=[
        dict(clip_id=r["clip_id"], speaker_id=r["speaker_id"], num_frames=len(r["frames"]))
        for r in split_records])
    all_records.extend(split_records)
  records.write_manifest(path, dict(
      source="synthtalk", resolution=16, fps=25.0, audio_sample_rate=records.AUDIO_SAMPLE_RATE,
      splits=splits, num_inputs=len(all_records), skipped={}, skipped_examples={}, settings={}))
  return all_records
