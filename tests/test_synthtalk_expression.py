"""SynthTalk's per-clip expression (smile, brow raise): rendered into the face, stored as the
clip's ground-truth emotion scores, carried by motion extraction as the clip's mean scores."""

import numpy as np
import pytest

from vasa_jax.data import records
from vasa_jax.data.synthtalk import dataset as synthtalk
from vasa_jax.data.synthtalk import render as render_lib
from vasa_jax.evaluators import synthtalk_check
from vasa_jax.inference import emotion_control

FACTOR = {name: i for i, name in enumerate(render_lib.FACTOR_NAMES)}
SETTINGS = dict(seed=3, fps=25.0, resolution=96, min_seconds=1.0, max_seconds=1.2,
                use_espeak=False, jpeg_quality=95)


def _clip_with(expression: str) -> int:
  """The first clip index of speaker 0 that gets `expression` when every clip is expressive."""
  return next(clip for clip in range(100)
              if synthtalk.clip_expression(SETTINGS["seed"], 0, clip, 1.0)[0] == expression)


def _clips(expression: str):
  """(record with the expression, the same clip rendered neutral)."""
  clip = _clip_with(expression)
  expressive = synthtalk.make_clip(synthtalk.Settings(**SETTINGS, expression_fraction=1.0), 0,
                                   clip)
  neutral = synthtalk.make_clip(synthtalk.Settings(**SETTINGS, expression_fraction=0.0), 0, clip)
  return expressive, neutral


def _mouth_corner_lift(landmarks: np.ndarray) -> np.ndarray:
  """[T]: how far the outer mouth corners (48, 54) sit above the mid-lip line (51, 57), over
  the mouth width (pixels / pixels; larger is a smile)."""
  corners = landmarks[:, [48, 54], 1].mean(axis=1)
  middle = landmarks[:, [51, 57], 1].mean(axis=1)
  width = np.linalg.norm(landmarks[:, 54] - landmarks[:, 48], axis=-1)
  return (middle - corners) / width


@pytest.mark.parametrize("expression,emotion_class", [("smile", "happiness"),
                                                      ("brow_raise", "surprise")])
def test_expression_is_stored_as_the_clips_emotion_scores(expression, emotion_class):
  expressive, neutral = _clips(expression)
  truth, notes = expressive["ground_truth"], expressive["annotations"]
  records.validate_record(expressive)
  assert truth["expression"] == expression and notes["emotion_available"]
  strength = truth["factors"][0, FACTOR[expression]]
  assert 0.7 <= strength <= 1.0 and np.all(truth["factors"][:, FACTOR[expression]] == strength)
  scores = notes["emotion"]  # [T, 8], the same every frame
  assert scores.shape == (len(expressive["frames"]), 8)
  np.testing.assert_allclose(scores.sum(-1), 1.0, atol=1e-6)
  assert scores[0, records.EMOTION_CLASSES.index(emotion_class)] == pytest.approx(strength)
  assert scores[0, records.EMOTION_CLASSES.index("neutral")] == pytest.approx(1 - strength)
  # The expression is drawn from a generator of its own: every other factor, the speech and
  # the head are the clip's whatever the expression.
  other = [i for name, i in FACTOR.items() if name != expression]
  np.testing.assert_array_equal(truth["factors"][:, other],
                                neutral["ground_truth"]["factors"][:, other])
  np.testing.assert_array_equal(expressive["audio"], neutral["audio"])
  assert neutral["ground_truth"]["expression"] == "none"
  assert neutral["annotations"]["emotion"][0, records.EMOTION_CLASSES.index("neutral")] == 1.0


def test_a_smile_lifts_the_mouth_corners_in_the_landmarks_and_the_pixels():
  smiling, neutral = _clips("smile")
  lift = _mouth_corner_lift(smiling["annotations"]["landmarks"])
  lift_neutral = _mouth_corner_lift(neutral["annotations"]["landmarks"])
  assert np.all(lift > lift_neutral + 0.05), (lift - lift_neutral).min()
  # The rendered mouth differs, and the difference lies around the mouth.
  identity = render_lib.Identity.from_array(smiling["ground_truth"]["identity"])
  frame = dict(zip(render_lib.FACTOR_NAMES, smiling["ground_truth"]["factors"][0]))
  with_smile = render_lib.render(identity, frame, 128).astype(np.float32)
  without = render_lib.render(identity, dict(frame, smile=0.0), 128).astype(np.float32)
  difference = np.abs(with_smile - without).sum(-1)  # [128, 128]
  landmarks = render_lib.project_landmarks(identity, frame, 128)
  lo = np.floor(landmarks[48:68].min(0) - 6).astype(int)
  hi = np.ceil(landmarks[48:68].max(0) + 6).astype(int)
  inside = difference[lo[1]:hi[1] + 1, lo[0]:hi[0] + 1].sum()
  assert difference.mean() > 0.2 and inside / difference.sum() > 0.9


def test_a_brow_raise_lifts_the_brows():
  raised, neutral = _clips("brow_raise")
  brows = slice(17, 27)
  lift = (neutral["annotations"]["landmarks"][:, brows, 1]
          - raised["annotations"]["landmarks"][:, brows, 1]).mean(axis=1)  # [T] pixels up
  mouth = np.abs(neutral["annotations"]["landmarks"][:, 48:68]
                 - raised["annotations"]["landmarks"][:, 48:68]).max()
  assert np.all(lift > 1.0) and mouth < 1e-3


class _EmotionFollowingSampler:
  """Stands in for a trained `MotionSampler`: motion [T, 3] whose first two entries are the smile
  and brow raise the emotion asks for (`follows`), or always neutral."""
  emotion_dim = 8

  def __init__(self, follows: bool):
    self.follows = follows

  def generate(self, features, gaze, distance, seed, emotion):
    del gaze, distance
    scores = emotion if self.follows else emotion_control.parse_emotion("neutral")
    rng = np.random.default_rng(seed)
    happy = scores[records.EMOTION_CLASSES.index("happiness")]
    surprised = scores[records.EMOTION_CLASSES.index("surprise")]
    return np.stack([np.full(len(features), 0.8 * happy), np.full(len(features), 0.8 * surprised),
                     rng.normal(size=len(features))], axis=1) + 0.01 * rng.normal(
                         size=(len(features), 3))


def _motion_clip(index: int, smile: float, brow: float) -> dict:
  rng = np.random.default_rng(index)
  factors = np.zeros((20, len(render_lib.FACTOR_NAMES)), np.float32)
  factors[:, FACTOR["smile"]], factors[:, FACTOR["brow_raise"]] = smile, brow
  motion = np.stack([np.full(20, smile), np.full(20, brow), rng.normal(size=20)], axis=1)
  return {"clip_id": f"c{index}", "motion": motion + 0.01 * rng.normal(size=(20, 3)),
          "audio_features": np.zeros((20, 4), np.float32), "gaze_main": np.zeros(2),
          "distance_main": 1.0,
          "ground_truth": {"factors": factors, "factor_names": list(render_lib.FACTOR_NAMES),
                           "expression": "smile" if smile else "brow_raise" if brow else "none"}}


def test_emotion_check_reads_the_expression_the_control_asks_for():
  clips = [_motion_clip(i, smile=0.8 * (i % 3 == 1), brow=0.8 * (i % 3 == 2)) for i in range(12)]
  train, test = clips[:9], clips[9:]
  assert synthtalk_check.has_expressions(train) and not synthtalk_check.has_expressions(
      [_motion_clip(0, 0.0, 0.0)])
  report = synthtalk_check.evaluate_emotion(_EmotionFollowingSampler(True), train, test)
  assert report["probe_r_squared_on_real_test_motion"]["smile"] > 0.9
  assert report["smile"]["generated_happy"] == pytest.approx(0.8, abs=0.05)
  assert report["smile"]["generated_neutral"] == pytest.approx(0.0, abs=0.05)
  assert report["smile"]["fraction_of_clips_happy_above_neutral"] == 1.0
  assert report["brow_raise"]["fraction_of_clips_surprise_above_neutral"] == 1.0
  ignored = synthtalk_check.evaluate_emotion(_EmotionFollowingSampler(False), train, test)
  assert ignored["smile"]["fraction_of_clips_happy_above_neutral"] == 0.0
  assert ignored["smile"]["generated_happy"] == pytest.approx(0.0, abs=0.05)
