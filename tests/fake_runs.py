"""Untrained tiny training runs, a face photo and a speech clip for the inference front ends.

The runs hold the initial weights saved as training runs save them (step 0, EMA entries), so
`vasa_jax.inference.talking_head.TalkingHead` restores them as it restores trained ones; the photo
is a SynthTalk head that dlib detects; the speech a synthetic voiced signal. Used by
tests/test_sample_cli.py and tests/test_app.py.
"""

import os
import wave

import flax.linen as nn
import grain
import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from configs import latent as latent_config_lib
from configs import motion as motion_config_lib
from vasa_jax.data import face_tracker
from vasa_jax.data import media
from vasa_jax.data.synthtalk import dataset as synthtalk
from vasa_jax.data.synthtalk import render as synthtalk_render
from vasa_jax.inference import sampler as sampler_lib
from vasa_jax.models import autoencoder as autoencoder_lib
from vasa_jax.models import motion_dit
from vasa_jax.training import checkpoint

FPS = 25.0  # the tiny motion config's frame rate
SAMPLE_RATE = 16_000
IMAGE_SIZE = 64  # the tiny latent config's image size


def init_params(init_fn, *args):
  """`jax.jit(init_fn)(*args)["params"]` compiled without XLA's backend optimisations (the tiny
  autoencoder's init compiles in half the time; the values are the same initialisation)."""
  compiled = jax.jit(init_fn).lower(*args).compile(
      compiler_options={"xla_backend_optimization_level": 0})
  return nn.meta.unbox(compiled(*args)["params"])


def save_run(workdir: str, config, state, step: int = 0) -> None:
  """Writes `state` as checkpoint `step` of a training run in `workdir`, as the loop does."""
  os.makedirs(workdir, exist_ok=True)
  checkpoint.write_config(workdir, config)
  checkpointer = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"), max_to_keep=1,
                                         save_interval_steps=1)
  checkpointer.save(step, state, iter(grain.MapDataset.range(1).to_iter_dataset()), force=True)
  checkpointer.wait_until_finished()
  checkpointer.close()


def motion_statistics(model_config) -> dict:
  """Statistics of small motion around zero: the untrained model's output stays a plausible pose
  and expression."""
  return {name: {"mean": np.zeros(shape, np.float32), "std": np.full(shape, 0.1, np.float32)}
          for name, shape in sampler_lib.statistics_shapes(model_config).items()}


def zero_dit_inputs(dit) -> tuple:
  """Zero inputs of MotionDiT.__call__ for a batch of one."""
  def zeros(*shape, dtype=jnp.float32):
    return jnp.zeros((1,) + shape, dtype)
  return (zeros(dit.window, dit.motion_dim), zeros(dtype=jnp.int32),
          zeros(dit.num_previous, dit.motion_dim), zeros(dit.num_previous, dit.audio_dim),
          zeros(dit.window, dit.audio_dim), zeros(2), zeros(), zeros(dit.emotion_dim))


def save_motion_run(workdir: str, config) -> None:
  """Step 0 of a stage-2 run of `config` (initial MotionDiT weights, `motion_statistics`)."""
  dit = motion_dit.MotionDiT.from_config(config.model)
  params = init_params(dit.init, jax.random.key(0, impl="rbg"), *zero_dit_inputs(dit))
  save_run(workdir, config, {"ema_params": params, "statistics": motion_statistics(config.model),
                             "step": 0})


def make_runs(root: str) -> tuple[str, str]:
  """(latent workdir, motion workdir) of untrained tiny models under `root`."""
  latent = latent_config_lib.get_config("tiny")
  model = autoencoder_lib.FaceAutoencoder.from_config(latent.model)
  image = jnp.zeros((1, latent.image_size, latent.image_size, 3))
  generator = init_params(model.init, jax.random.key(0, impl="rbg"), image, image)
  latent_dir, motion_dir = os.path.join(root, "latent"), os.path.join(root, "motion")
  save_run(latent_dir, latent, {"ema_generator": generator, "step": 0})
  save_motion_run(motion_dir, motion_config_lib.get_config("tiny"))
  return latent_dir, motion_dir


def save_posing_latent_run(latent_dir: str, workdir: str) -> str:
  """A copy of the stage-1 run `latent_dir` whose motion encoder's (zero-initialised) pose head
  has random weights, so that its z_pose follows the face's pose; returns `workdir`."""
  config, state, _ = checkpoint.restore_for_inference(latent_dir, "latent")
  head = state["ema_generator"]["motion_encoder"]["pose_head"]["dense"]
  kernel = np.asarray(head["kernel"])
  head["kernel"] = np.random.default_rng(0).normal(
      0.0, 3.0 / np.sqrt(kernel.shape[0]), kernel.shape).astype(kernel.dtype)
  save_run(workdir, config, state)
  return workdir


def write_face_photo(path: str, size: int = 256) -> None:
  """Writes a `size` px SynthTalk head the face tracker finds (the first of 20 seeded heads)."""
  tracker = face_tracker.FaceTracker()
  rng = np.random.default_rng(2024)
  for _ in range(20):
    image = synthtalk_render.render(synthtalk_render.sample_identity(rng), {}, size)
    if tracker.track_image(image).skip_reason is None:
      Image.fromarray(image).save(path)
      return
  raise AssertionError("the face tracker found none of 20 SynthTalk heads")


def write_speech(path: str, seconds: float, seed: int = 1) -> np.ndarray:
  """Writes `seconds` of synthetic voiced speech as a 16 kHz file; returns the samples [N]."""
  waveform = synthtalk.synthetic_speech(np.random.default_rng(seed), seconds, 120.0)
  media.write_audio(path, waveform, SAMPLE_RATE)
  return waveform


def write_wav(path: str, samples) -> None:
  """Writes int16 `samples` [N] as a 16 kHz mono wav (N may be 0: a file with no audio)."""
  with wave.open(path, "wb") as file:
    file.setnchannels(1)
    file.setsampwidth(2)
    file.setframerate(SAMPLE_RATE)
    file.writeframes(np.asarray(samples, np.int16).tobytes())


def write_driving_video(path: str, num_frames: int, size: int = 256) -> None:
  """Writes a SynthTalk head turning from side to side (yaw -20 to 20 degrees and back, some
  pitch) at 25 fps, `num_frames` frames of `size` px, as an mp4 without audio."""
  rng = np.random.default_rng(7)
  identity = synthtalk_render.sample_identity(rng)
  phase = np.linspace(0.0, 2.0 * np.pi, num_frames)
  factors = np.stack([synthtalk_render.factors_to_vector(
      {"yaw": 20.0 * np.sin(value), "pitch": 8.0 * np.cos(value)}) for value in phase])
  frames, _ = synthtalk_render.render_frames(identity, factors, size)
  media.write_video(path, frames, FPS)
