"""vasa_jax.inference.pose_control: head motion scale and driving pose on motion chunks."""

import numpy as np
import pytest

from vasa_jax.inference import pose_control


def test_back_and_forth_plays_the_clip_forwards_then_backwards():
  np.testing.assert_array_equal(pose_control.back_and_forth(np.arange(10), 4),
                                [0, 1, 2, 3, 2, 1, 0, 1, 2, 3])
  np.testing.assert_array_equal(pose_control.back_and_forth(np.arange(3), 1), [0, 0, 0])


def test_pose_control_on_chunks():
  rng = np.random.default_rng(0)
  reference = rng.normal(size=7).astype(np.float32)
  motion = rng.normal(size=(6, 10)).astype(np.float32)  # [z_pose (7), z_dyn (3)]
  scaled = pose_control.PoseControl(reference, head_motion=2.0)(motion, first_frame=0)
  np.testing.assert_allclose(scaled[:, :7], reference + 2.0 * (motion[:, :7] - reference),
                             rtol=1e-6)
  np.testing.assert_array_equal(scaled[:, 7:], motion[:, 7:])
  # A driving pose of 4 frames, a chunk from frame 3 shows driving frames 3, 2, 1 (back).
  driving = rng.normal(size=(4, 7)).astype(np.float32)
  control = pose_control.PoseControl(reference, head_motion=1.0, driving_pose=driving)
  np.testing.assert_allclose(control(motion[:3], first_frame=3)[:, :7], driving[[3, 2, 1]],
                             atol=1e-6)
  still = pose_control.PoseControl(reference, head_motion=0.0, driving_pose=driving)
  np.testing.assert_array_equal(still(motion, first_frame=0)[:, :7],
                                np.broadcast_to(reference, (6, 7)))
  with pytest.raises(ValueError, match="head motion must be a number >= 0, got -1"):
    pose_control.PoseControl(reference, head_motion=-1.0)
