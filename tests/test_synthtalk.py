"""SynthTalk: the records and manifest it writes, lip sync with the audio, on-demand re-rendering,
the effect of each factor, dlib on the renders, and determinism."""

import io
import logging
import os

import numpy as np
import pytest
from PIL import Image

from vasa_jax.data.synthtalk import dataset as synthtalk
from vasa_jax.data import face_tracker
from vasa_jax.data import media
from vasa_jax.data.synthtalk import render as render_lib
from vasa_jax.data import records

FACTOR = {name: i for i, name in enumerate(render_lib.FACTOR_NAMES)}
# dlib's mean landmark error on these renders is ~0.05-0.08 of the inter-ocular distance for
# |yaw| <= 25 (see the generator's report); the threshold leaves a margin.
MAX_DLIB_LANDMARK_ERROR = 0.11
MIN_DLIB_DETECTION_RATE = 0.85


def generate(output_dir, **flags):
  settings = dict(num_speakers=3, clips_per_speaker=2, resolution=64, seed=5, min_seconds=1.2,
                  max_seconds=2.0, clips_per_shard=3, num_workers=1)
  settings.update(flags)
  return synthtalk.main([f"--output_dir={output_dir}"]
                        + [f"--{key}={value}" for key, value in settings.items()])


def decode_frames(record):
  return np.stack([np.asarray(Image.open(io.BytesIO(data))) for data in record["frames"]])


def frame_envelope(audio, num_frames, fps):
  """RMS of each frame's audio (non-overlapping windows), computed independently of synthtalk."""
  hop = int(round(records.AUDIO_SAMPLE_RATE / fps))
  samples = audio.astype(np.float64)[:num_frames * hop]
  samples = np.pad(samples, (0, num_frames * hop - len(samples)))
  return np.sqrt((samples.reshape(num_frames, hop) ** 2).mean(axis=1))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("synthtalk"))
  generate(path)
  return path


@pytest.fixture(scope="module")
def dataset(data_dir):
  manifest = records.read_manifest(data_dir)
  return manifest, {split: [record for path in records.split_shard_paths(data_dir, manifest, split)
                            for record in records.read_shard(path)]
                    for split in manifest["splits"]}


def test_manifest_counts_and_splits_match_the_flags(data_dir, dataset):
  manifest, by_split = dataset
  assert manifest["source"] == "synthtalk"
  assert (manifest["resolution"], manifest["fps"]) == (64, 25.0)
  assert manifest["audio_sample_rate"] == records.AUDIO_SAMPLE_RATE
  assert manifest["num_inputs"] == 6 and manifest["skipped"] == {}
  assert manifest["settings"]["clips_per_speaker"] == 2
  # 3 speakers, test_fraction 0.1: one test speaker (2 clips), two train speakers (4 clips).
  assert [len(manifest["splits"][s]["clips"]) for s in ("train", "test")] == [4, 2]
  assert manifest["splits"]["train"]["shards"] == [records.shard_name("train", i, 2)
                                                   for i in range(2)]
  assert manifest["splits"]["test"]["shards"] == [records.shard_name("test", 0, 1)]
  speakers = {split: {record["speaker_id"] for record in by_split[split]} for split in by_split}
  assert len(speakers["train"]) == 2 and len(speakers["test"]) == 1
  assert not speakers["train"] & speakers["test"]
  for split, split_records in by_split.items():
    listed = manifest["splits"][split]["clips"]
    assert [c["clip_id"] for c in listed] == [r["clip_id"] for r in split_records]
    assert [c["num_frames"] for c in listed] == [len(r["frames"]) for r in split_records]
  assert len({r["clip_id"] for rs in by_split.values() for r in rs}) == 6
  assert sorted(os.listdir(data_dir)) == sorted(
      [records.MANIFEST_NAME] + manifest["splits"]["train"]["shards"]
      + manifest["splits"]["test"]["shards"])


def test_records_carry_per_frame_ground_truth(dataset):
  _, by_split = dataset
  for record in by_split["train"] + by_split["test"]:
    records.validate_record(record)
    num_frames = len(record["frames"])
    assert 1.2 * 25 - 1 <= num_frames <= 2.0 * 25 + 1
    assert record["source"] == "synthtalk" and record["source_path"] == ""
    assert record["clip_id"].startswith(record["speaker_id"] + "/")
    assert record["speaker_id"].startswith("synth")
    assert abs(len(record["audio"]) - num_frames / 25 * records.AUDIO_SAMPLE_RATE) <= 1
    truth, notes = record["ground_truth"], record["annotations"]
    assert truth["factor_names"] == list(render_lib.FACTOR_NAMES)
    assert truth["audio_kind"] == ("espeak-ng" if synthtalk.espeak_available() else "synthetic")
    factors = truth["factors"]
    assert factors.shape == (num_frames, len(render_lib.FACTOR_NAMES))
    assert factors.dtype == np.float32
    for name in ("mouth_open", "blink"):
      assert 0.0 <= factors[:, FACTOR[name]].min() and factors[:, FACTOR[name]].max() <= 1.0
    assert factors[:, FACTOR["mouth_open"]].max() > 0.3  # the clip talks
    np.testing.assert_array_equal(notes["head_pose"],
                                  factors[:, [FACTOR["yaw"], FACTOR["pitch"], FACTOR["roll"]]])
    np.testing.assert_array_equal(notes["distance"], factors[:, FACTOR["distance"]])
    np.testing.assert_allclose(notes["gaze"], render_lib.camera_gaze(factors), atol=1e-4)
    identity = render_lib.Identity.from_array(truth["identity"])
    np.testing.assert_allclose(notes["landmarks"],
                               render_lib.project_landmarks(identity, factors, 64), atol=1e-4)
    np.testing.assert_array_equal(notes["crop_box"], np.tile([32.0, 32.0, 64.0], (num_frames, 1)))
    # Without --expression_fraction every clip is neutral: no smile, no raised brows.
    assert truth["expression"] == "none" and notes["emotion_available"]
    assert not factors[:, [FACTOR["smile"], FACTOR["brow_raise"]]].any()
    neutral = np.eye(len(records.EMOTION_CLASSES))[records.EMOTION_CLASSES.index("neutral")]
    np.testing.assert_array_equal(notes["emotion"], np.tile(neutral, (num_frames, 1)))
    assert notes["face_found"].all()
    assert decode_frames(record).shape == (num_frames, 64, 64, 3)


def test_mouth_opening_follows_the_audio_envelope():
  for use_espeak in ([True, False] if synthtalk.espeak_available() else [False]):
    settings = synthtalk.Settings(seed=1, fps=25.0, resolution=32, min_seconds=3.0,
                                  max_seconds=4.0, use_espeak=use_espeak, jpeg_quality=90)
    clips = [synthtalk.make_clip(settings, speaker, 0) for speaker in range(4)]
    assert {c["ground_truth"]["audio_kind"] for c in clips} == {
        "espeak-ng" if use_espeak else "synthetic"}
    correlations, controls = [], []
    for clip, other in zip(clips, clips[1:] + clips[:1]):
      mouth = clip["ground_truth"]["factors"][:, FACTOR["mouth_open"]]
      envelope = frame_envelope(clip["audio"], len(mouth), clip["fps"])
      correlations.append(np.corrcoef(envelope, mouth)[0, 1])
      length = min(len(mouth), len(other["frames"]))
      other_envelope = frame_envelope(other["audio"], length, other["fps"])
      controls.append(abs(np.corrcoef(other_envelope, mouth[:length])[0, 1]))
      shuffled = np.random.default_rng(0).permutation(envelope)
      controls.append(abs(np.corrcoef(shuffled, mouth)[0, 1]))
    assert min(correlations) > 0.6, (use_espeak, correlations)
    assert np.mean(controls) < 0.25 and max(controls) < 0.5, (use_espeak, controls)


def test_stored_identity_and_factors_rerender_the_stored_frames(dataset):
  _, by_split = dataset
  record = by_split["test"][0]
  identity = render_lib.Identity.from_array(record["ground_truth"]["identity"])
  factors = record["ground_truth"]["factors"]
  images, landmarks = render_lib.render_frames(identity, factors, record["resolution"])
  error = np.abs(images.astype(np.float32) - decode_frames(record).astype(np.float32))
  assert error.mean() < 5.0  # JPEG's error
  # Encoded as the generator does, the re-render is the stored frame, byte for byte.
  assert [media.encode_jpeg(image, 90) for image in images] == record["frames"]
  np.testing.assert_allclose(landmarks, record["annotations"]["landmarks"], atol=1e-4)
  # One frame rendered alone is the same frame, and rendering is deterministic.
  single, single_landmarks = render_lib.render_with_landmarks(identity, factors[7], 64)
  assert np.abs(single.astype(int) - images[7].astype(int)).max() <= 1
  np.testing.assert_allclose(single_landmarks, landmarks[7], atol=1e-4)
  np.testing.assert_array_equal(render_lib.render(identity, factors[7], 64), single)


def test_identity_and_factor_vectors_round_trip():
  identity = render_lib.sample_identity(np.random.default_rng(3))
  vector = identity.to_array()
  assert vector.dtype == np.float32 and vector.shape == (render_lib.Identity.vector_size(),)
  assert render_lib.Identity.from_array(vector) == identity
  assert render_lib.sample_identity(np.random.default_rng(3)) == identity
  assert render_lib.sample_identity(np.random.default_rng(4)) != identity
  factors = {"yaw": 12.5, "blink": 0.25, "eye_phi": -3.0}
  vector = render_lib.factors_to_vector(factors)
  assert vector.dtype == np.float32 and vector.shape == (len(render_lib.FACTOR_NAMES),)
  assert render_lib.factors_from_vector(vector) == dict(render_lib.NEUTRAL_FACTORS, **factors)
  with pytest.raises(KeyError):
    render_lib.factors_to_vector({"frown": 1.0})


def test_pose_conventions_match_records():
  identity = render_lib.sample_identity(np.random.default_rng(0))

  def landmarks(**factors):
    return render_lib.project_landmarks(identity, factors, 128)

  frontal = landmarks()
  eye_midpoint = frontal[[36, 39, 42, 45]].mean(axis=0)
  interocular = np.linalg.norm(frontal[[42, 45]].mean(0) - frontal[[36, 39]].mean(0))
  assert interocular == pytest.approx(records.REFERENCE_INTEROCULAR * 128, rel=1e-4)
  assert np.linalg.norm(landmarks(distance=1.25)[[42, 45]].mean(0)
                        - landmarks(distance=1.25)[[36, 39]].mean(0)) == pytest.approx(
                            interocular / 1.25, rel=1e-4)
  nose_offset = frontal[30] - eye_midpoint
  turned = landmarks(yaw=20.0)
  assert (turned[30] - turned[[36, 39, 42, 45]].mean(0))[0] < nose_offset[0] - 3  # image left
  raised = landmarks(pitch=15.0)
  assert (raised[30] - raised[[36, 39, 42, 45]].mean(0))[1] < nose_offset[1] - 2  # looks up
  tilted = landmarks(roll=15.0)
  assert tilted[45, 1] > tilted[36, 1] + 5  # clockwise: the image-right eye goes down
  shifted = landmarks(tx=0.1, ty=-0.05)
  np.testing.assert_allclose(shifted - frontal, np.tile([12.8, -6.4], (68, 1)), atol=1e-3)
  gaze = render_lib.camera_gaze({"yaw": 10.0, "pitch": -5.0, "eye_theta": 4.0, "eye_phi": 3.0})
  np.testing.assert_allclose(gaze, [14.0, -2.0], atol=0.5)


def region_mass(difference, landmarks, indices, margin):
  """Fraction of the summed |difference| inside the landmarks' box grown by `margin` pixels."""
  lo = np.floor(landmarks[indices].min(axis=0) - margin).astype(int)
  hi = np.ceil(landmarks[indices].max(axis=0) + margin).astype(int)
  inside = difference[max(lo[1], 0):hi[1] + 1, max(lo[0], 0):hi[0] + 1].sum()
  return inside / difference.sum()


def test_each_factor_changes_its_own_part_of_the_image():
  rng = np.random.default_rng(2)
  first, second = render_lib.sample_identity(rng), render_lib.sample_identity(rng)
  base = {"yaw": 8.0, "pitch": 3.0, "mouth_open": 0.1}

  def image(identity=first, **changes):
    return render_lib.render(identity, dict(base, **changes), 128).astype(np.float32)

  def difference(a, b):
    return np.abs(a - b).sum(axis=-1)

  reference = image()
  landmarks = render_lib.project_landmarks(first, base, 128)
  assert difference(reference, image(second)).mean() > 20.0
  assert difference(reference, image(yaw=-15.0)).mean() > 10.0
  # The same identity keeps its colours under another pose: the face's middle (between the eyes
  # and the mouth) is closer in colour to itself than to the other identity's.
  def face_color(picture, identity, **pose):
    points = render_lib.project_landmarks(identity, dict(base, **pose), 128)
    (x0, y0), (x1, y1) = points[[31, 35]].min(0).astype(int), points[[48, 54]].max(0).astype(int)
    return picture[y0 - 12:y1, x0 - 8:x1 + 8].reshape(-1, 3).mean(axis=0)

  other_pose = face_color(image(yaw=-15.0, pitch=-8.0), first, yaw=-15.0, pitch=-8.0)
  assert (np.abs(face_color(reference, first) - other_pose).sum()
          < 0.5 * np.abs(face_color(image(second), second) - other_pose).sum())
  # Dynamics stay local.
  mouth = difference(reference, image(mouth_open=0.9))
  assert mouth.mean() > 0.3
  assert region_mass(mouth, landmarks, np.r_[48:68, 5:12], margin=4) > 0.9
  eyes = np.r_[36:48]
  blink = difference(reference, image(blink=1.0))
  assert blink.mean() > 0.3 and region_mass(blink, landmarks, eyes, margin=4) > 0.9
  gaze = difference(reference, image(eye_theta=20.0))
  assert gaze.mean() > 0.05 and region_mass(gaze, landmarks, eyes, margin=3) > 0.95
  # The pupils follow the gaze: dark pixels in the eyes move to the image's left for theta > 0.
  def pupil_x(picture):
    lo, hi = landmarks[eyes].min(0).astype(int), landmarks[eyes].max(0).astype(int)
    window = picture[lo[1]:hi[1] + 1, lo[0]:hi[0] + 1].sum(axis=-1)
    dark = window < np.percentile(window, 10)
    return np.nonzero(dark)[1].mean()

  assert pupil_x(image(eye_theta=20.0)) < pupil_x(image(eye_theta=-20.0)) - 1.0


def test_dlib_finds_the_faces_and_their_landmarks():
  import dlib  # pylint: disable=g-import-not-at-top
  detector = dlib.get_frontal_face_detector()
  predictor = dlib.shape_predictor(face_tracker.landmark_model_path())
  rng = np.random.default_rng(11)
  yaws = np.array([-25.0, -12.0, 0.0, 12.0, 25.0])
  found, errors = 0, []
  for _ in range(6):
    identity = render_lib.sample_identity(rng)
    factors = np.zeros((len(yaws), len(render_lib.FACTOR_NAMES)), np.float32)
    factors[:, FACTOR["yaw"]] = yaws
    factors[:, FACTOR["pitch"]] = rng.uniform(-8.0, 8.0, len(yaws))
    factors[:, FACTOR["roll"]] = rng.uniform(-5.0, 5.0, len(yaws))
    factors[:, FACTOR["distance"]] = rng.uniform(0.9, 1.2, len(yaws))
    factors[:, FACTOR["mouth_open"]] = rng.uniform(0.0, 1.0, len(yaws))
    images, landmarks = render_lib.render_frames(identity, factors, 128)
    for image, truth in zip(images, landmarks):
      boxes = detector(image, 1)
      if not boxes:
        continue
      found += 1
      shape = predictor(image, max(boxes, key=lambda box: box.area()))
      predicted = np.array([[shape.part(i).x, shape.part(i).y] for i in range(68)])
      interocular = np.linalg.norm(truth[[42, 45]].mean(0) - truth[[36, 39]].mean(0))
      errors.append(np.linalg.norm(predicted - truth, axis=1).mean() / interocular)
  assert found / (6 * len(yaws)) >= MIN_DLIB_DETECTION_RATE
  assert np.mean(errors) < MAX_DLIB_LANDMARK_ERROR
  # At 64 pixels the faces still read as faces (dlib needs two upsamplings there).
  small = [render_lib.render(render_lib.sample_identity(rng), {"yaw": yaw}, 64)
           for yaw in (-15.0, 0.0, 15.0) for _ in range(3)]
  assert np.mean([len(detector(image, 2)) > 0 for image in small]) >= 0.75


def test_same_seed_same_bytes_whatever_the_workers(tmp_path):
  flags = dict(num_speakers=2, clips_per_speaker=1, resolution=32, min_seconds=0.6,
               max_seconds=1.0, clips_per_shard=1)
  generate(tmp_path / "one", **flags)
  generate(tmp_path / "two", num_workers=2, **flags)
  generate(tmp_path / "other", seed=6, **flags)
  names = sorted(os.listdir(tmp_path / "one"))
  assert names == sorted(os.listdir(tmp_path / "two"))
  shards = [name for name in names if name.endswith(".array_record")]
  assert len(shards) == 2  # one per split
  for name in shards:
    assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()
    assert (tmp_path / "one" / name).read_bytes() != (tmp_path / "other" / name).read_bytes()
  manifests = [records.read_manifest(str(tmp_path / run)) for run in ("one", "two")]
  for manifest in manifests:
    del manifest["settings"]["output_dir"], manifest["settings"]["num_workers"]
  assert manifests[0] == manifests[1]


def test_missing_espeak_falls_back_to_pseudo_speech_with_one_warning(tmp_path, monkeypatch,
                                                                      caplog):
  monkeypatch.setattr(synthtalk, "espeak_available", lambda: False)
  with caplog.at_level(logging.WARNING, logger=synthtalk.__name__):
    generate(tmp_path, num_speakers=2, clips_per_speaker=2, resolution=32, min_seconds=1.0,
             max_seconds=1.2)
  assert len([r for r in caplog.records if "espeak-ng" in r.getMessage()]) == 1
  manifest = records.read_manifest(str(tmp_path))
  assert manifest["settings"]["audio_kind"] == "synthetic"
  for split in ("train", "test"):
    for path in records.split_shard_paths(str(tmp_path), manifest, split):
      for record in records.read_shard(path):
        assert record["ground_truth"]["audio_kind"] == "synthetic"
        assert np.abs(record["audio"]).max() > 1000
