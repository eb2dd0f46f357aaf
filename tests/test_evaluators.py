"""The tracker-based evaluators: Delta P, E_g / E_d, LMD, the ArcFace alignment, the shared
tracking pass and the report table."""

import numpy as np
import pytest

from vasa_jax.data import media
from vasa_jax.data.synthtalk import dataset as synthtalk
from vasa_jax.evaluators import identity
from vasa_jax.evaluators import landmarks
from vasa_jax.evaluators import lip_sync
from vasa_jax.evaluators import motion
from vasa_jax.evaluators import report
from vasa_jax.evaluators import tracking


def rotation(degrees):
  angle = np.deg2rad(degrees)
  return np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])


def face_landmarks(seed=0):
  return np.random.default_rng(seed).uniform(80, 180, (68, 2))


def test_delta_pose_counts_consecutive_found_frames():
  head_pose = np.zeros((6, 3))
  head_pose[:, 0] = [0, 1, 3, 6, 10, 15]  # yaw steps 1, 2, 3, 4, 5
  found = np.array([True, True, True, False, True, True])
  # Pairs (0,1), (1,2), (4,5): yaw changes 1, 2, 5; pitch and roll 0 -> mean over 9 values.
  assert motion.delta_pose(head_pose, found) == pytest.approx((1 + 2 + 5) / 9)
  assert np.isnan(motion.delta_pose(head_pose, np.array([True, False] * 3)))


def test_gaze_and_distance_errors_use_the_stage_2_definitions():
  gaze = np.tile([5.0, -2.0], (20, 1))
  gaze[15:] = [30.0, 10.0]  # a glance away: the main direction stays the fixation
  found = np.ones(20, bool)
  assert motion.gaze_error(gaze, found, [5.0, -2.0]) == pytest.approx(0.0, abs=1e-5)
  assert motion.gaze_error(gaze, found, [8.0, 2.0]) == pytest.approx(5.0, abs=1e-5)
  distance = np.linspace(0.9, 1.1, 20)
  assert motion.distance_error(distance, found, 1.2) == pytest.approx(0.2)
  assert np.isnan(motion.distance_error(distance, np.arange(20) < 3, 1.0))


def test_similarity_alignment_and_lmd():
  face = face_landmarks()
  moved = 1.7 * face @ rotation(12).T + np.array([40.0, -25.0])
  scale, rotation_matrix, translation = landmarks.similarity_transform(face, moved)
  assert scale == pytest.approx(1.7)
  np.testing.assert_allclose(rotation_matrix, rotation(12), atol=1e-9)
  np.testing.assert_allclose(translation, [40.0, -25.0], atol=1e-9)
  # Placement and size do not count; a moved mouth does (in reference pixels at 256 px).
  generated = np.stack([moved] * 4)
  reference = np.stack([face] * 4)
  found = np.ones(4, bool)
  assert landmarks.lmd(generated, found, reference, found, 256) == pytest.approx(0.0, abs=1e-9)
  open_mouth = reference.copy()
  open_mouth[:, 57, 1] += 10.0  # lower lip 10 px lower in the reference
  assert landmarks.lmd(generated, found, open_mouth, found, 256) == pytest.approx(10.0 / 20)
  assert landmarks.lmd(generated, found, open_mouth, found, 512) == pytest.approx(5.0 / 20)
  assert np.isnan(landmarks.lmd(generated, ~found, reference, found, 256))


def test_arcface_alignment_maps_the_five_points_onto_the_template():
  # A face whose five points are the template scaled by 1.5, turned by 10 degrees and moved.
  points = 1.5 * identity.ARCFACE_TEMPLATE @ rotation(10).T + np.array([30.0, 20.0])
  face = np.zeros((68, 2))
  face[36:42], face[42:48], face[30], face[48], face[54] = points
  np.testing.assert_allclose(identity.five_points(face), points)
  # An image whose red and green values are its x and y: the crop shows where it sampled.
  ys, xs = np.mgrid[0:240, 0:250]
  image = np.stack([xs, ys, np.zeros_like(xs)], -1).clip(0, 255).astype(np.uint8)
  crop = identity.align_face(image, face)
  assert crop.shape == (112, 112, 3) and crop.dtype == np.uint8
  for u, v in ((10, 20), (56, 56), (100, 90)):
    expected = 1.5 * rotation(10) @ np.array([u, v]) + np.array([30.0, 20.0])
    np.testing.assert_allclose(crop[v, u, :2], expected, atol=0.51)
  rng = np.random.default_rng(0)
  assert identity.scored_frames(rng.random(200) > 0.5, 10).shape == (10,)
  assert list(identity.scored_frames(np.array([False, True, True]), 10)) == [1, 2]


@pytest.fixture(scope="module")
def synthtalk_clip():
  settings = synthtalk.Settings(seed=3, fps=25.0, resolution=96, min_seconds=1.6,
                                max_seconds=1.6, use_espeak=False, jpeg_quality=90)
  record = synthtalk.make_clip(settings, speaker_index=1, clip_index=0)
  return np.stack([media.decode_jpeg(frame) for frame in record["frames"]]), record


def test_tracking_reads_landmarks_pose_and_mouth_in_frame_pixels(synthtalk_clip):
  frames, record = synthtalk_clip
  tracker = tracking.make_tracker()
  track = tracking.track(frames, 25.0, tracker)
  assert track.skip_reason is None and track.found.mean() > 0.9
  # The landmarks equal the tracker's raw per-frame landmarks on the upscaled frames, mapped back.
  upscaled, scale = lip_sync.upscale_for_tracking(frames)
  found, raw = tracker.track_landmarks(upscaled)
  both = found & track.found
  np.testing.assert_allclose(track.landmarks[both], raw[both] / scale, atol=1e-3)
  np.testing.assert_allclose(track.mouth().opening[both],
                             lip_sync.mouth_track(found, raw).opening[both], atol=1e-4)
  # Head pose follows SynthTalk's true yaw.
  true_yaw = record["annotations"]["head_pose"][:, 0]
  assert np.corrcoef(track.head_pose[track.found, 0], true_yaw[track.found])[0, 1] > 0.8
  blank = tracking.track(np.full((5, 96, 96, 3), 120, np.uint8), 25.0, tracker)
  assert blank.skip_reason == "no_face"


def test_report_table_and_overall():
  per_clip = {"a": {"sync_confidence": 4.0, "lmd": 2.0},
              "b": {"sync_confidence": 6.0, "lmd": float("nan")}}
  values, counts = report.overall(per_clip, {"fvd25": 123.456})
  assert values == {"sync_confidence": 5.0, "lmd": 2.0, "fvd25": 123.456}
  assert counts == {"sync_confidence": 2, "lmd": 1}
  text = report.table(values)
  lines = text.splitlines()
  assert lines[0].split() == ["Sc", "↑", "SD", "↓", "CAPP", "↑", "ΔP", "FVD25", "↓"]
  assert lines[1].split() == ["generated", "5.000", "—", "—", "—", "123.456"]
  assert "LMD ↓" in lines[3] and "2.000" in lines[4]
