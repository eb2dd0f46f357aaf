r"""A web app: photo + speech -> talking-face video in the browser (Gradio), and its API.

  python -m vasa_jax.app --latent_checkpoint=/tmp/latent_tiny \
      --motion_checkpoint=/tmp/motion_tiny [--host=127.0.0.1] [--port=7860] [--share] \
      [--max_audio_seconds=60] [--max_file_mb=20] [--wav2vec2_dir=DIR] [--batch_size=8]

The two runs are restored once at start-up (`talking_head.TalkingHead`); a bad checkpoint ends
the program with a one-line `error: ...` and exit status 1. The page takes a photo (its face crop,
resized to the model's image size, is shown as soon as the photo is uploaded) and speech
(uploaded or recorded), the controls of `python -m vasa_jax.sample` (gaze, distance, guidance
scales, denoising steps, seed, the streaming path, head motion, a driving video for the head
pose, the emotion: a name or eight scores as `--emotion` takes), and returns the mp4 and its motion (`--save_motion`'s npz: z_pose, z_dyn, controls). Videos are made by the
library functions `vasa_jax.sample` uses (`crop_face`, `read_photo`, `read_speech`,
`render_video`), one at a time (a queue). Bad inputs (no face or several, empty, silent,
unreadable or too long audio) are shown as a message in the page; the server keeps serving.

API (`gradio_client`): endpoint "/generate"; inputs photo and speech files, then the controls in
the order of `generate`'s parameters, each optional; outputs (video, summary line, motion npz). A bad input
raises `gradio_client.exceptions.AppError` carrying the message. Endpoint "/crop": photo ->
the face crop the model sees.

Safe by default: served on 127.0.0.1 only, no public share link unless --share, uploads capped
at --max_file_mb, speech at --max_audio_seconds, Gradio's analytics off.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import sys
import tempfile
import time
import uuid
from typing import Iterator, Optional, Sequence

import numpy as np

from vasa_jax.data import media
from vasa_jax.inference import emotion_control
from vasa_jax.inference import talking_head
from vasa_jax.inference.talking_head import SampleError
from vasa_jax.models import audio as audio_lib
from vasa_jax.training import checkpoint as checkpoint_lib

try:
  import gradio as gr
except ImportError:  # the `app` extra is not installed; `main` says so
  gr = None

# Ranges of the page's controls. Gaze (theta, phi) in degrees: theta > 0 looks towards the image's
# left, phi > 0 up (`head_geometry`); distance 1.0 is the reference face size, larger is farther.
GAZE_RANGE = (-30.0, 30.0)
DISTANCE_RANGE = (0.5, 2.0)
CFG_RANGE = (0.0, 5.0)
HEAD_MOTION_RANGE = (0.0, 2.0)  # 0: still head, 1: as generated, 2: twice the pose deviation
MAX_QUEUE = 20  # requests waiting for their turn before new ones are turned away
CACHE_SECONDS = 3600  # Gradio's copies of uploads and videos are deleted after an hour
MAX_STEPS = 200  # the most denoising steps offered (VASA-1 samples with 50)
# The emotion choice that leaves the emotion to the model (the condition is dropped).
EMOTION_UNSET = "model chooses"
CROP_DISPLAY_PX = 256  # the crop is shown enlarged to this size, pixels kept sharp
CSS = (f"#crop img {{width: {CROP_DISPLAY_PX}px !important; height: {CROP_DISPLAY_PX}px "
       "!important; object-fit: contain; image-rendering: pixelated;}")


class App:
  """The loaded models and the two functions the page calls (`crop` and `generate`)."""

  def __init__(self, head: talking_head.TalkingHead, max_audio_seconds: float, output_dir: str):
    self.head = head
    self.max_audio_seconds = max_audio_seconds
    self.output_dir = output_dir  # one video at a time lives here until the next request

  def _face(self, photo: Optional[str]) -> np.ndarray:
    """The photo's face crop (`talking_head.crop_face`), uint8 [512, 512, 3]."""
    if not photo:
      raise SampleError("upload a photo with one face first")
    return talking_head.crop_face(talking_head.read_photo(photo), "the photo")

  def crop(self, photo: Optional[str]) -> Optional[np.ndarray]:
    """The face crop as the model sees it, uint8 [S, S, 3] (None while there is no photo)."""
    if not photo:
      return None
    with _shown_as_message(photo):
      return self.head.model_input(self._face(photo))

  def generate(self, photo: Optional[str], speech: Optional[str], set_gaze: bool = False,
               gaze_theta: float = 0.0, gaze_phi: float = 0.0, set_distance: bool = False,
               distance: float = 1.0, cfg_audio: Optional[float] = None,
               cfg_gaze: Optional[float] = None, steps: Optional[int] = None, seed: int = 0,
               stream: bool = False, head_motion: float = 1.0,
               pose_from: Optional[str] = None,
               emotion: Optional[str] = None) -> tuple[str, str, str]:
    """(mp4 path, summary line, motion npz path) for a photo and a speech file; gaze and distance
    are dropped (the model samples them) unless set; cfg_audio, cfg_gaze and steps (None)
    default to the motion config's; head_motion scales the head pose's deviation from the
    photo's; pose_from (a driving video) gives the head pose instead of the generated one;
    emotion: a name or 8 comma-separated scores (`emotion_control`), None or EMOTION_UNSET: the
    model chooses."""
    with _shown_as_message(photo, speech, pose_from):
      emotion_scores = None
      if emotion and emotion != EMOTION_UNSET:
        try:
          emotion_scores = emotion_control.parse_emotion(emotion)
        except ValueError as error:
          raise SampleError(str(error)) from None
        if len(emotion_scores) != self.head.sampler.emotion_dim:
          raise SampleError(f"this motion model takes no emotion (it was trained with "
                            f"{self.head.sampler.emotion_dim} emotion scores)")
      face = self._face(photo)
      if not speech:
        raise SampleError("upload or record speech first")
      waveform = talking_head.read_speech(speech)
      seconds = len(waveform) / audio_lib.SAMPLE_RATE
      if seconds > self.max_audio_seconds:
        raise SampleError(f"the speech is {seconds:.1f} s long; this server takes at most "
                          f"{self.max_audio_seconds:g} s (--max_audio_seconds)")
      for old in os.listdir(self.output_dir):  # the previous request's video, already served
        os.remove(os.path.join(self.output_dir, old))
      name = f"talking_{uuid.uuid4().hex[:8]}"
      output = os.path.join(self.output_dir, f"{name}.mp4")
      motion_path = os.path.join(self.output_dir, f"{name}_motion.npz")
      start = time.perf_counter()
      report = talking_head.render_video(
          self.head, face, waveform, output, stream=bool(stream),
          head_motion=1.0 if head_motion is None else float(head_motion),
          pose_from=pose_from or None, motion_path=motion_path,
          gaze=(float(gaze_theta), float(gaze_phi)) if set_gaze else None,
          distance=float(distance) if set_distance else None, emotion=emotion_scores,
          seed=int(seed), lambda_audio=cfg_audio, lambda_gaze=cfg_gaze,
          num_steps=None if steps is None else int(steps))
    summary = (f"{report['frames']} frames at {self.head.fps:g} fps ({report['seconds']:.2f} s "
               f"of speech) in {time.perf_counter() - start:.1f} s")
    if stream:
      summary += (f"; streaming: first frame {1000 * report['first_frame_latency_s']:.0f} ms after "
                  f"the first audio chunk, {report['sustained_fps']:.1f} frames/s sustained")
    return output, summary, motion_path


@contextlib.contextmanager
def _shown_as_message(*uploads: Optional[str]) -> Iterator[None]:
  """Turns the expected input problems into `gr.Error`: a message in the page (an AppError for
  API clients) instead of a failed request; the server logs no traceback for them. The server's
  copies of `uploads` are named by their file names in the message."""
  try:
    yield
  except (SampleError, media.MediaError) as error:
    message = str(error)
    for path in filter(None, uploads):
      message = message.replace(path, os.path.basename(path))
    raise gr.Error(message, duration=None, print_exception=False) from error


def build(app: App, title: str) -> "gr.Blocks":
  """The page: inputs on the left, the face crop, video and summary on the right."""
  head = app.head
  sampling = head.sampler.config.sampling  # the defaults of the guidance scales
  with gr.Blocks(title="vasa_jax talking face", analytics_enabled=False,
                 delete_cache=(CACHE_SECONDS, CACHE_SECONDS)) as page:
    gr.Markdown(f"# vasa_jax: a talking face from a photo and speech\n{title}")
    with gr.Row():
      with gr.Column():
        photo = gr.Image(label="Photo (one face)", type="filepath", image_mode=None,
                         elem_id="photo")
        speech = gr.Audio(label="Speech", sources=["upload", "microphone"], type="filepath",
                          format=None, elem_id="speech")
        with gr.Accordion("Controls", open=True):
          set_gaze = gr.Checkbox(label="Set the gaze (otherwise the model chooses)", value=False)
          with gr.Row():
            gaze_theta = gr.Slider(*GAZE_RANGE, value=0.0, step=1.0,
                                   label="Gaze theta (degrees, > 0: towards the image's left)")
            gaze_phi = gr.Slider(*GAZE_RANGE, value=0.0, step=1.0,
                                 label="Gaze phi (degrees, > 0: up)")
          set_distance = gr.Checkbox(label="Set the head distance (otherwise the model chooses)",
                                     value=False)
          distance = gr.Slider(*DISTANCE_RANGE, value=1.0, step=0.05,
                               label="Head distance (1 = reference face size, larger = farther)")
          with gr.Row():
            cfg_audio = gr.Slider(*CFG_RANGE, value=sampling.lambda_audio, step=0.1,
                                  label="Audio guidance scale")
            cfg_gaze = gr.Slider(*CFG_RANGE, value=sampling.lambda_gaze, step=0.1,
                                 label="Gaze guidance scale")
          with gr.Row():
            steps = gr.Slider(1, min(MAX_STEPS, head.sampler.schedule.num_steps),
                              value=head.sampler.num_steps, step=1, label="Denoising steps")
            seed = gr.Number(value=0, precision=0, minimum=0, maximum=2**31 - 1, label="Seed")
          stream = gr.Checkbox(label="Streaming path (audio fed in chunks; reports the latency)",
                               value=False)
          head_motion = gr.Slider(*HEAD_MOTION_RANGE, value=1.0, step=0.05,
                                  label="Head motion (0 = still head, 1 = as generated)")
          pose_from = gr.Video(label="Driving video for the head pose (optional)",
                               sources=["upload"], format=None, elem_id="pose_from")
          emotion = gr.Dropdown(
              [EMOTION_UNSET, *emotion_control.NAMES], value=EMOTION_UNSET,
              allow_custom_value=True, elem_id="emotion",
              label="Emotion (a name, or 8 comma-separated scores: anger, contempt, disgust, "
                    "fear, happiness, neutral, sadness, surprise)")
        button = gr.Button("Generate", variant="primary", elem_id="generate")
      with gr.Column():
        crop = gr.Image(label=f"Face crop the model sees ({head.image_size} px)",
                        interactive=False, format="png", height=CROP_DISPLAY_PX + 40,
                        elem_id="crop")
        video = gr.Video(label="Talking face", format="mp4", interactive=False, height=400,
                         elem_id="video")
        summary = gr.Textbox(label="Summary", interactive=False, elem_id="summary")
        motion = gr.File(label="Motion (z_pose, z_dyn, controls; .npz)", interactive=False,
                         elem_id="motion")
    photo.change(app.crop, photo, crop, api_name="crop", concurrency_id="crop")
    button.click(app.generate, [
        photo, speech, set_gaze, gaze_theta, gaze_phi, set_distance, distance, cfg_audio,
        cfg_gaze, steps, seed, stream, head_motion, pose_from, emotion], [video, summary, motion],
                 api_name="generate",
                 concurrency_limit=1, concurrency_id="generate")
  return page.queue(max_size=MAX_QUEUE)


# ----------------------------------------------------------------------------------------------
# Command line.
# ----------------------------------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog="python -m vasa_jax.app", description=__doc__.split("\n\n")[0],
      formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--latent_checkpoint", required=True, help="stage-1 run's --workdir")
  parser.add_argument("--motion_checkpoint", required=True, help="stage-2 run's --workdir")
  parser.add_argument("--host", default="127.0.0.1",
                      help="address to serve on (0.0.0.0 opens it to the network)")
  parser.add_argument("--port", type=int, default=7860, help="port to serve on (default 7860)")
  parser.add_argument("--share", action="store_true",
                      help="also open a public gradio.live link (off by default)")
  parser.add_argument("--max_audio_seconds", type=float, default=60.0,
                      help="longest speech accepted, in seconds (default 60)")
  parser.add_argument("--max_file_mb", type=float, default=20.0,
                      help="largest upload accepted, in MB (default 20)")
  parser.add_argument("--wav2vec2_dir", help="overrides the motion config's audio.wav2vec2_dir")
  parser.add_argument("--batch_size", type=int, default=8, help="frames per decoder call")
  return parser


def _run_name(workdir: str) -> str:
  """A run's folder name (the page does not show the server's paths)."""
  return os.path.basename(os.path.normpath(workdir))


def main(argv: Optional[Sequence[str]] = None) -> int:
  args = _parser().parse_args(argv)
  if gr is None:
    print("error: the app needs gradio: pip install 'vasa_jax[app]'", file=sys.stderr)
    return 1
  os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
  try:
    if args.max_audio_seconds <= 0 or args.max_file_mb <= 0:
      raise SampleError("--max_audio_seconds and --max_file_mb must be positive")
    head = talking_head.TalkingHead(args.latent_checkpoint, args.motion_checkpoint,
                                    wav2vec2_dir=args.wav2vec2_dir, batch_size=args.batch_size)
  except (SampleError, checkpoint_lib.CheckpointError, media.MediaError) as error:
    print(f"error: {error}", file=sys.stderr)
    return 1
  output_dir = tempfile.mkdtemp(prefix="vasa_jax_app_")
  title = (f"Models: `{_run_name(args.latent_checkpoint)}` ({head.image_size} px) and "
           f"`{_run_name(args.motion_checkpoint)}` ({head.fps:g} fps). Speech up to "
           f"{args.max_audio_seconds:g} s, uploads up to {args.max_file_mb:g} MB.")
  page = build(App(head, args.max_audio_seconds, output_dir), title)
  try:
    page.launch(server_name=args.host, server_port=args.port, share=args.share,
                max_file_size=int(args.max_file_mb * 1024 * 1024), ssr_mode=False, css=CSS,
                show_error=False, prevent_thread_lock=True)
  except OSError:  # Gradio's "Cannot find empty port": taken, or an address not this machine's
    shutil.rmtree(output_dir, ignore_errors=True)
    print(f"error: cannot serve on {args.host}:{args.port}: the port is in use or the address "
          "is not this machine's; choose another --port or --host", file=sys.stderr)
    return 1
  # `kill` (SIGTERM) ends the server as Ctrl-C does, through the clean-up below.
  signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
  try:
    page.block_thread()  # serves until Ctrl-C
  finally:
    page.close()
    shutil.rmtree(output_dir, ignore_errors=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
