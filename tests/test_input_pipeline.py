"""The Grain pipelines: determinism, resumption, sampling semantics, and global sharded batches."""

import itertools

import jax
import numpy as np
import pytest
from PIL import Image

from tests import fake_clips
from vasa_jax.data import input_pipeline


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("clips"))
  fake_clips.make_data_dir(path, num_frames=lambda clip_number: 12 + clip_number)
  return path


def stage1(data_dir, seed=0, batch_size=4, **kwargs):
  return input_pipeline.stage1_iterator(data_dir, "train", batch_size=batch_size, image_size=16,
                                        seed=seed, **kwargs)


def take(iterator, count):
  return [next(iterator) for _ in range(count)]


def assert_same_batches(first, second):
  assert len(first) == len(second)
  for a, b in zip(first, second):
    assert a.keys() == b.keys()
    for key in a:
      np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_stage1_batch_shapes_and_dtypes(data_dir):
  batch = next(stage1(data_dir))
  for name in ("source", "driver", "cross_identity"):
    assert batch[f"{name}_image"].shape == (4, 16, 16, 3)
    assert batch[f"{name}_image"].dtype == np.uint8
    assert batch[f"{name}_head_pose"].shape == (4, 3)
    assert batch[f"{name}_gaze"].shape == (4, 2)
  assert batch["speaker"].shape == (4,)
  for name in ("driver_region_mask", "source_expression_mask"):
    assert batch[name].shape == (4, 16, 16)
    assert batch[name].dtype == np.uint8
  # The gaze loss's eye boxes (y0, x0, y1, x1), centred in the driver's mouth-and-eye mask.
  boxes = batch["driver_eye_boxes"]
  assert boxes.shape == (4, 2, 4) and boxes.dtype == np.float32
  assert np.all(boxes[..., 2] > boxes[..., 0]) and np.all(boxes[..., 3] > boxes[..., 1])
  for image_boxes, mask in zip(boxes, batch["driver_region_mask"]):
    for y0, x0, y1, x1 in image_boxes:
      centre = mask[int((y0 + y1) / 2), int((x0 + x1) / 2)]
      assert centre == 1


def test_stage1_same_seed_same_batches_other_seed_other_batches(data_dir):
  assert_same_batches(take(stage1(data_dir, seed=3), 5), take(stage1(data_dir, seed=3), 5))
  first = take(stage1(data_dir, seed=3), 5)
  other = take(stage1(data_dir, seed=4), 5)
  assert any(not np.array_equal(a["source_image"], b["source_image"])
             for a, b in zip(first, other))


def test_stage1_pairs_share_a_clip_and_cross_identity_is_another_speaker(data_dir):
  for batch in take(stage1(data_dir, batch_size=6), 6):
    for i in range(6):
      source_clip, source_frame = fake_clips.identify_frame(batch["source_image"][i])
      driver_clip, driver_frame = fake_clips.identify_frame(batch["driver_image"][i])
      other_clip, other_frame = fake_clips.identify_frame(batch["cross_identity_image"][i])
      assert source_clip == driver_clip
      assert source_clip // 4 != other_clip // 4  # 4 clips per speaker
      assert batch["speaker"][i] == source_clip // 4
      assert batch["cross_identity_speaker"][i] == other_clip // 4
      # Annotations belong to the sampled frames (yaw = frame number, pitch = clip number).
      assert batch["source_head_pose"][i, 0] == source_frame
      assert batch["driver_head_pose"][i, 0] == driver_frame
      assert batch["cross_identity_head_pose"][i, 1] == other_clip


def test_stage1_epochs_cover_every_clip_in_a_new_order(data_dir):
  iterator = stage1(data_dir, batch_size=4)
  clips = [fake_clips.identify_frame(image)[0]
           for batch in take(iterator, 6) for image in batch["source_image"]]
  first_epoch, second_epoch = clips[:12], clips[12:]
  assert sorted(first_epoch) == list(range(12)) == sorted(second_epoch)
  assert first_epoch != second_epoch


def test_stage1_flip_mirrors_pose_and_gaze(data_dir):
  augmentation = input_pipeline.Augmentation(flip_prob=1.0)
  batch = next(stage1(data_dir, augmentation=augmentation))
  for i in range(4):
    _, frame = fake_clips.identify_frame(batch["source_image"][i])
    np.testing.assert_array_equal(batch["source_head_pose"][i], [-frame, batch[
        "source_head_pose"][i, 1], -1.0])
    np.testing.assert_array_equal(batch["source_gaze"][i], [-frame, -frame])


def test_stage1_colour_augmentation_changes_pixels_within_bounds(data_dir):
  plain = next(stage1(data_dir))["source_image"].astype(float)
  augmented = next(stage1(data_dir, augmentation=input_pipeline.Augmentation(
      brightness=0.3)))["source_image"].astype(float)
  ratio = augmented.mean(axis=(1, 2, 3)) / plain.mean(axis=(1, 2, 3))
  assert np.all(np.abs(ratio - 1) <= 0.32) and np.any(np.abs(ratio - 1) > 0.01)


def test_stage1_resume_from_saved_state_continues_exactly(data_dir):
  uninterrupted = take(stage1(data_dir, seed=7), 9)
  first_run = stage1(data_dir, seed=7)
  take(first_run, 4)
  state = first_run.get_state()
  resumed = stage1(data_dir, seed=7)
  resumed.set_state(state)
  assert_same_batches(take(resumed, 5), uninterrupted[4:])


def test_processes_read_disjoint_records(data_dir):
  seen = []
  for process_index in range(2):
    iterator = stage1(data_dir, batch_size=4, process_index=process_index, process_count=2)
    batches = take(iterator, 3)  # 2 examples per batch: one epoch of 6 records
    assert batches[0]["source_image"].shape[0] == 2
    seen.append({fake_clips.identify_frame(image)[0]
                 for batch in batches for image in batch["source_image"]})
  assert seen[0].isdisjoint(seen[1])
  assert seen[0] | seen[1] == set(range(12))


class RecordingSource:
  """A data source that notes the entries read from it."""

  def __init__(self, source):
    self.source, self.entries_read = source, []

  def __getitem__(self, entry):
    self.entries_read.append(int(entry))
    return self.source[entry]

  def __len__(self):
    return len(self.source)


def test_stage1_reads_two_clip_headers_and_its_three_frames_only(data_dir):
  index = input_pipeline.ClipIndex.load(data_dir, "train")
  reader = input_pipeline._RecordReader(index)  # pylint: disable=protected-access
  reader.source = RecordingSource(reader.source)
  sampler = input_pipeline.Stage1Sampler(reader, 16, input_pipeline.Augmentation())
  rng = np.random.default_rng(0)
  first = index.first_entries  # the fake clip numbers are the record indices
  for record_index in range(len(reader)):
    reader.source.entries_read.clear()
    example = sampler(record_index, rng)
    clip, source_frame = fake_clips.identify_frame(example["source_image"])
    _, driver_frame = fake_clips.identify_frame(example["driver_image"])
    other, other_frame = fake_clips.identify_frame(example["cross_identity_image"])
    assert clip == record_index
    # Header entries, then frame t at header + 2 + t; never the audio (header + 1).
    assert sorted(reader.source.entries_read) == sorted([
        first[clip], first[other], first[clip] + 2 + source_frame,
        first[clip] + 2 + driver_frame, first[other] + 2 + other_frame])


def test_stage1_needs_two_speakers(tmp_path):
  fake_clips.make_data_dir(str(tmp_path), num_speakers=1)
  with pytest.raises(ValueError, match="two speakers"):
    stage1(str(tmp_path))


def test_a_split_of_one_speaker_takes_cross_identity_frames_from_another_split(tmp_path, caplog):
  path = str(tmp_path)
  fake_clips.make_data_dir(path, num_speakers=4, test_speakers=1)  # test: clips 12-15
  with pytest.raises(ValueError, match="two speakers"):
    input_pipeline.stage1_iterator(path, "test", batch_size=4, image_size=16, seed=0)
  assert input_pipeline.cross_identity_split(path, "train", "test") == "train"
  with caplog.at_level("INFO"):
    assert input_pipeline.cross_identity_split(path, "test", "train") == "train"
  assert "split 'test'" in caplog.text and "one speaker (spk3)" in caplog.text
  iterator = input_pipeline.stage1_iterator(path, "test", batch_size=4, image_size=16, seed=0,
                                            cross_identity_split="train")
  for batch in take(iterator, 3):
    for i in range(4):
      clip, _ = fake_clips.identify_frame(batch["source_image"][i])
      other, other_frame = fake_clips.identify_frame(batch["cross_identity_image"][i])
      assert 12 <= clip < 16 and other < 12  # the cross-identity frame is a train clip's
      assert batch["cross_identity_head_pose"][i, 0] == other_frame
      assert batch["cross_identity_head_pose"][i, 1] == other


def test_missing_data_dir_is_named(tmp_path):
  with pytest.raises(FileNotFoundError, match="does not exist"):
    stage1(str(tmp_path / "nowhere"))
  with pytest.raises(FileNotFoundError, match="manifest.json"):
    stage1(str(tmp_path))


def stage2(data_dir, seed=0, **kwargs):
  return input_pipeline.stage2_iterator(
      data_dir, "train", batch_size=3, window=8, num_previous=3,
      frame_fields=("annotations/head_pose", "annotations/gaze"), with_audio=True, seed=seed,
      **kwargs)


def test_stage2_windows_and_previous_frames_are_aligned(data_dir):
  samples_per_frame = 640
  for batch in take(stage2(data_dir), 8):
    assert batch["head_pose"].shape == (3, 8, 3)
    assert batch["head_pose_previous"].shape == (3, 3, 3)
    assert batch["audio"].shape == (3, 8 * samples_per_frame)
    assert batch["audio_previous"].shape == (3, 3 * samples_per_frame)
    for i in range(3):
      start = int(batch["window_start"][i])
      np.testing.assert_array_equal(batch["head_pose"][i, :, 0], np.arange(start, start + 8))
      previous = np.arange(start - 3, start)
      np.testing.assert_array_equal(batch["previous_mask"][i], previous >= 0)
      np.testing.assert_array_equal(batch["head_pose_previous"][i, :, 0], np.maximum(previous, 0))
      np.testing.assert_array_equal(batch["gaze"][i, :, 1], -np.arange(start, start + 8))
      # Audio of frame f holds the value (f + 1) * 100 / 32768; zeros before the clip start.
      audio_frames = batch["audio"][i].reshape(8, samples_per_frame) * 32768 / 100 - 1
      np.testing.assert_allclose(audio_frames, np.arange(start, start + 8)[:, None] +
                                 np.zeros((1, samples_per_frame)), atol=1e-3)
      previous_audio = batch["audio_previous"][i].reshape(3, samples_per_frame) * 32768 / 100
      np.testing.assert_allclose(previous_audio[:, 0], np.where(previous >= 0, previous + 1, 0),
                                 atol=1e-3)


def test_stage2_skips_clips_shorter_than_the_window(tmp_path):
  fake_clips.make_data_dir(str(tmp_path), num_frames=lambda clip_number: 6 + clip_number)
  windows = [batch["head_pose"][i, 0, 1]
             for batch in take(stage2(str(tmp_path)), 10) for i in range(3)]
  assert min(windows) >= 2  # clips 0 and 1 have 6 and 7 < 8 frames
  with pytest.raises(ValueError, match="has 28 frames"):
    input_pipeline.stage2_iterator(str(tmp_path), "train", batch_size=3, window=8 + 20,
                                   num_previous=3, frame_fields=(), with_audio=False, seed=0)


def test_stage2_resume_and_seed(data_dir):
  uninterrupted = take(stage2(data_dir, seed=1), 6)
  assert_same_batches(uninterrupted, take(stage2(data_dir, seed=1), 6))
  run = stage2(data_dir, seed=1)
  take(run, 2)
  resumed = stage2(data_dir, seed=1)
  resumed.set_state(run.get_state())
  assert_same_batches(take(resumed, 4), uninterrupted[2:])


def test_multiprocess_workers_give_the_same_batches(data_dir):
  single = take(stage1(data_dir, seed=2), 4)
  multi = take(stage1(data_dir, seed=2, num_workers=2), 4)
  assert_same_batches(single, multi)


def test_global_batch_is_sharded_on_the_data_axes(data_dir):
  assert jax.device_count() == 8
  mesh = jax.make_mesh((4, 2, 1), ("data", "fsdp", "model"),
                       axis_types=(jax.sharding.AxisType.Auto,) * 3)
  sharding = input_pipeline.batch_sharding(mesh, (("batch", ("data", "fsdp")),))
  local = next(stage1(data_dir, batch_size=8))
  global_batch = input_pipeline.make_global_batch(local, sharding)
  images = global_batch["source_image"]
  assert isinstance(images, jax.Array) and images.shape == (8, 16, 16, 3)
  assert images.sharding.spec == jax.sharding.PartitionSpec(("data", "fsdp"))
  shards = sorted(images.addressable_shards, key=lambda shard: shard.index[0].start)
  assert len(shards) == 8 and all(shard.data.shape == (1, 16, 16, 3) for shard in shards)
  for i, shard in enumerate(shards):
    np.testing.assert_array_equal(np.asarray(shard.data)[0], local["source_image"][i])
  np.testing.assert_array_equal(np.asarray(global_batch["speaker"]), local["speaker"])


def test_expression_measures_follow_synthtalk_ground_truth_dynamics_not_pose():
  from vasa_jax.data.synthtalk import render as render_lib
  rng = np.random.default_rng(0)
  identity = render_lib.sample_identity(rng)
  count = 24
  factors = np.stack([render_lib.factors_to_vector({
      "yaw": rng.uniform(-20, 20), "pitch": rng.uniform(-10, 10), "roll": rng.uniform(-5, 5),
      "distance": rng.uniform(0.9, 1.1), "mouth_open": rng.uniform(0, 1),
      "blink": rng.uniform(0, 1), "eye_theta": rng.uniform(-15, 15),
      "eye_phi": rng.uniform(-8, 8)}) for _ in range(count)])
  _, landmarks = render_lib.render_frames(identity, factors, 128)
  gaze = render_lib.camera_gaze(factors)
  column = dict(zip(render_lib.FACTOR_NAMES, factors.T))
  open_eye = input_pipeline.open_eye_ratio(landmarks)
  measures = np.stack([input_pipeline.expression_measures(
      landmarks[t], factors[t, :3].astype(np.float32), gaze[t], open_eye) for t in range(count)])
  assert measures.shape == (count, input_pipeline.EXPRESSION_SIZE)
  assert measures.dtype == np.float32
  correlation = lambda a, b: np.corrcoef(a, b)[0, 1]
  assert correlation(measures[:, 0], column["mouth_open"]) > 0.95
  assert correlation(measures[:, 1], column["blink"]) < -0.9  # eyes close as blink rises
  # Gaze in the head, radians, against the eyes' angles in the head (degrees).
  np.testing.assert_allclose(measures[:, 2], np.deg2rad(column["eye_theta"]), atol=0.06)
  np.testing.assert_allclose(measures[:, 3], np.deg2rad(column["eye_phi"]), atol=0.06)
  assert abs(correlation(measures[:, 0], column["yaw"])) < 0.5


def test_eye_opening_over_the_clips_open_eye_does_not_depend_on_the_eyes_shape():
  from vasa_jax.data import head_geometry
  from vasa_jax.data.synthtalk import render as render_lib
  rng = np.random.default_rng(0)
  raw, relative = [], []  # per identity: [open-eye mean, half-blink]
  for _ in range(8):
    identity = render_lib.sample_identity(rng)
    factors = np.stack([render_lib.factors_to_vector(
        {"yaw": rng.uniform(-10, 10), "mouth_open": rng.uniform(0, 1), "blink": blink})
        for blink in [0.0] * 7 + [0.6]])  # a clip of open eyes with one half-closed frame
    _, landmarks = render_lib.render_frames(identity, factors, 128)
    ratios = head_geometry.eye_aspect_ratio(landmarks)  # [8], one per frame
    np.testing.assert_allclose(ratios[3], head_geometry.eye_aspect_ratio(landmarks[3]))
    gaze = render_lib.camera_gaze(factors)
    open_eye = input_pipeline.open_eye_ratio(landmarks)
    assert open_eye == pytest.approx(np.median(ratios))
    eye_opening = np.array([input_pipeline.expression_measures(
        landmarks[t], factors[t, :3].astype(np.float32), gaze[t], open_eye)[1]
        for t in range(8)])
    np.testing.assert_allclose(eye_opening, ratios / open_eye, rtol=1e-5)
    raw.append([ratios[:7].mean(), ratios[7]])
    relative.append([eye_opening[:7].mean(), eye_opening[7]])
  for values, open_spread_bound in ((np.array(raw), (0.05, np.inf)),
                                    (np.array(relative), (0.0, 0.02))):
    blink_effect = np.mean(values[:, 0] - values[:, 1])
    # How much open eyes differ between faces, against what half a blink changes: the raw
    # ratio's faces differ by ~0.1 of it (a swap would carry the driver's eye shape), the
    # ratio over the clip's open eye by ~0.002.
    assert open_spread_bound[0] < values[:, 0].std() / blink_effect < open_spread_bound[1]
  assert np.all(np.array(relative)[:, 1] < 0.6)  # half a blink reads as closing, on every face


def test_stage1_expression_is_flip_invariant_except_the_horizontal_gaze(data_dir):
  plain = next(stage1(data_dir, seed=5))
  flipped = next(stage1(data_dir, seed=5, augmentation=input_pipeline.Augmentation(
      flip_prob=1.0)))
  for name in ("source", "driver", "cross_identity"):
    assert plain[f"{name}_expression"].shape == (4, input_pipeline.EXPRESSION_SIZE)
    # The fake clips' gaze minus head pose: (frame - frame, -frame - clip) degrees.
    np.testing.assert_allclose(plain[f"{name}_expression"][:, 2], 0.0, atol=1e-6)
    np.testing.assert_allclose(flipped[f"{name}_expression"][:, [0, 1, 3]],
                               plain[f"{name}_expression"][:, [0, 1, 3]], atol=1e-6)
    np.testing.assert_allclose(flipped[f"{name}_expression"][:, 2],
                               -plain[f"{name}_expression"][:, 2], atol=1e-6)
  np.testing.assert_allclose(
      plain["source_expression"][:, 3],
      np.deg2rad(-plain["source_head_pose"][:, 0] - plain["source_head_pose"][:, 1]),
      rtol=1e-5)


def test_face_region_mask_covers_mouth_and_eyes_only():
  from vasa_jax.data import head_geometry
  from vasa_jax.data.synthtalk import render as render_lib
  identity = render_lib.sample_identity(np.random.default_rng(1))
  _, landmarks = render_lib.render_with_landmarks(identity, {"yaw": 10.0, "mouth_open": 1.0}, 64)
  mask = input_pipeline.face_region_mask(landmarks, 64)
  assert mask.shape == (64, 64) and mask.dtype == np.uint8
  for indices in (head_geometry.MOUTH_INDICES, head_geometry.RIGHT_EYE, head_geometry.LEFT_EYE):
    columns, rows = np.floor(landmarks[indices]).astype(int).T
    assert np.all(mask[rows, columns] == 1)
  nose_tip = np.floor(landmarks[30]).astype(int)
  assert mask[nose_tip[1], nose_tip[0]] == 0
  assert mask[:, :8].sum() == 0 and mask[:12].sum() == 0  # background and forehead
  assert 0.05 < mask.mean() < 0.3


def test_expression_region_mask_holds_what_a_change_of_expression_changes():
  """On SynthTalk renders, opening the mouth and blinking changes pixels (jaw line included)
  almost only inside the unchanged frame's mask; background and forehead are outside it."""
  from vasa_jax.data.synthtalk import render as render_lib
  rng = np.random.default_rng(2)
  changed_inside, changed = 0, 0
  for _ in range(6):
    identity = render_lib.sample_identity(rng)
    pose = {"yaw": rng.uniform(-25, 25), "pitch": rng.uniform(-12, 12),
            "roll": rng.uniform(-10, 10)}
    image, landmarks = render_lib.render_with_landmarks(identity, {**pose, "mouth_open": 0.1}, 64)
    moved, _ = render_lib.render_with_landmarks(
        identity, {**pose, "mouth_open": 0.9, "blink": 0.8}, 64)
    mask = input_pipeline.expression_region_mask(landmarks, 64)
    assert mask.shape == (64, 64) and mask.dtype == np.uint8
    assert mask[:, :4].sum() == 0 and mask[:10].sum() == 0  # background and forehead
    energy = np.square(moved.astype(float) - image.astype(float)).sum(axis=-1)  # [64, 64]
    changed_inside += np.sum(energy * mask)
    changed += np.sum(energy)
    # It holds the mouth and eye boxes of face_region_mask.
    assert np.all(mask >= input_pipeline.face_region_mask(landmarks, 64))
  assert changed > 0 and changed_inside / changed > 0.98


def reference_augmentation(image, aug):
  """The augmentation as written out: Pillow's bilinear affine map of the crop box, the flip,
  then the colour formula in float32 (truncated to uint8)."""
  size = image.shape[0]
  side = size / aug["scale"]
  centre_x, centre_y = size / 2 + aug["shift_x"] * size, size / 2 + aug["shift_y"] * size
  box = (centre_x - side / 2, centre_y - side / 2, centre_x + side / 2, centre_y + side / 2)
  image = np.asarray(Image.fromarray(image).transform(
      (size, size), Image.Transform.EXTENT, box, Image.Resampling.BILINEAR))
  if aug["flip"]:
    image = image[:, ::-1]
  pixels = image.astype(np.float32)
  grey = pixels.mean(axis=-1, keepdims=True)
  pixels = grey + (pixels - grey) * aug["saturation"]
  pixels = (pixels - pixels.mean()) * aug["contrast"] + pixels.mean()
  return np.clip(pixels * aug["brightness"], 0, 255).astype(np.uint8)


@pytest.mark.parametrize("scale, shift_x, shift_y, flip", [
    (1.0, 0.0, 0.0, False), (1.0, 0.0, 0.0, True), (1.05, 0.03, -0.02, True),
    (0.95, -0.03, 0.01, False)])
def test_augmented_image_follows_the_written_out_augmentation(scale, shift_x, shift_y, flip):
  rng = np.random.default_rng(3)
  size = 96
  # A smooth colourful image with an edge, so resampling and colour both show.
  y, x = np.mgrid[:size, :size] / size
  image = np.stack([200 * x + 20 * rng.random((size, size)), 150 * y + 40 * (x > 0.6),
                    120 + 60 * np.sin(6 * x * y)], axis=-1).astype(np.uint8)
  aug = {"flip": flip, "brightness": 1.07, "contrast": 0.92, "saturation": 1.09, "scale": scale,
         "shift_x": shift_x, "shift_y": shift_y}
  augmented = input_pipeline._augment_image(image, aug).astype(int)  # pylint: disable=protected-access
  expected = reference_augmentation(image, aug).astype(int)
  assert augmented.shape == (size, size, 3)
  # Output pixels whose 2 x 2 bilinear neighbourhood lies inside the frame (away from the black
  # beyond it) agree: within one grey level without zoom or shift (OpenCV's colour matrix runs in
  # fixed point), within a few, mostly one, with them (OpenCV's warp samples at 1/32 pixel in
  # fixed point, Pillow's in floats).
  side = size / scale
  source_x = (np.arange(size) + 0.5) / size * side + size / 2 + shift_x * size - side / 2
  source_y = (np.arange(size) + 0.5) / size * side + size / 2 + shift_y * size - side / 2
  if flip:
    source_x = source_x[::-1]
  inside = ((source_y[:, None] > 1) & (source_y[:, None] < size - 1)
            & (source_x[None, :] > 1) & (source_x[None, :] < size - 1))
  difference = np.abs(augmented - expected)[inside]
  if scale == 1.0:
    assert difference.max() <= 1 and difference.mean() < 0.2
  else:
    assert difference.max() <= 3 and difference.mean() < 0.8 and (difference > 1).mean() < 0.15
  assert np.abs(augmented - image.astype(int)).mean() > 2  # the augmentation did change it


@pytest.mark.parametrize("flip", [False, True])
def test_augmented_points_follow_the_augmented_image(flip):
  """`_augment_points` moves a point where `_augment_image` moves its pixels."""
  size = 64
  image = np.zeros((size, size, 3), np.uint8)
  image[29:32, 19:22] = 255  # a 3 x 3 blob centred on (x, y) = (20.5, 30.5)
  aug = {"flip": flip, "brightness": 1.0, "contrast": 1.0, "saturation": 1.0, "scale": 1.06,
         "shift_x": 0.04, "shift_y": -0.03}
  augmented = input_pipeline._augment_image(image, aug)  # pylint: disable=protected-access
  weights = augmented[..., 0].astype(np.float64)
  rows, columns = np.mgrid[:size, :size] + 0.5
  centroid = [np.sum(weights * columns) / weights.sum(), np.sum(weights * rows) / weights.sum()]
  moved = input_pipeline._augment_points(  # pylint: disable=protected-access
      np.array([[20.5, 30.5]]), size, aug)[0]
  np.testing.assert_allclose(moved, centroid, atol=0.3)
  assert np.linalg.norm(moved - [20.5, 30.5]) > 1.0  # the augmentation did move it
