r"""Photo + speech -> talking-face video with the trained stage-1 and stage-2 models (VASA-1).

  python -m vasa_jax.sample --image=face.jpg --audio=speech.wav \
      --latent_checkpoint=/tmp/latent_tiny --motion_checkpoint=/tmp/motion_tiny \
      --output=/tmp/talking.mp4 [--gaze=THETA,PHI] [--distance=D] [--emotion=happy|E1,...,E8] \
      [--cfg_audio=0.5] [--cfg_gaze=1.0] [--steps=50] [--seed=0] [--batch_size=8] \
      [--head_motion=1.0] [--pose_from=VIDEO] [--save_motion=FILE.npz] \
      [--wav2vec2_dir=DIR] [--stream [--chunk_frames=N]]

1. Both checkpoints are restored (EMA weights, checked against the models their configs build;
   the motion frame must be [z_pose (7), z_dyn] of this latent model).
2. The photo's face is found and cropped as data preparation crops video frames: the dlib
   tracker's square crop box (`vasa_jax.data.face_tracker`, FFHQ framing) resampled to 512 px, then
   resized (bicubic) to the latent model's image size as stored training frames are
   (`input_pipeline.decode_frame`). No face, or several, is an error.
3. V_app and z_id are encoded once from the crop.
4. The speech (any format PyAV reads, resampled to 16 kHz mono) gives one feature frame per
   video frame (`vasa_jax.data.speech_features`, as in `data_prep.extract_motion`), the diffusion
   sampler turns them into motion (`vasa_jax.inference.sampler`), and the decoder renders each motion
   frame in fixed-size batches.
5. The frames are written as H.264 at the motion config's fps with the input audio muxed in as
   AAC: round(audio seconds x fps) frames, so the video and audio durations agree within a frame.

Controls: --gaze (theta, phi) in degrees and --distance (1.0 = the reference face size) are the
clip-level gaze_main / distance_main of the stage-2 data; --emotion is the clip's mean emotion
scores (`vasa_jax.inference.emotion_control`): a name (happy, sad, angry, surprise, fear, disgust,
contempt, neutral) or eight comma-separated non-negative scores in HSEmotion's class order (anger,
contempt, disgust, fear, happiness, neutral, sadness, surprise), scaled to sum to 1. A control left
out is dropped (the model samples it). --cfg_audio and --cfg_gaze are the
classifier-free guidance scales (defaults from the motion config).

Head pose (`vasa_jax.inference.pose_control`): --head_motion=S scales the shown head pose's
deviation from the photo's own z_pose (the stage-1 motion encoder on the crop): 0 keeps the head
still, 1 (default) shows it as generated, above 1 exaggerates it. --pose_from=VIDEO takes the head
pose (z_pose) of each frame from a driving video instead (its face tracked and cropped as data
preparation does, encoded by the stage-1 motion encoder; a video shorter than the speech runs
back and forth); the facial dynamics (z_dyn) still come from the audio. --head_motion applies to
the driving pose too. --save_motion=FILE.npz writes z_pose [T, 7] and z_dyn [T, D] of each frame
as shown, the fps, and the controls used (JSON in `controls`).

--stream produces the same video through the streaming path: audio is fed in chunks of
--chunk_frames video frames (default: the window W) as if it arrived live; each chunk makes the
feature blocks and motion windows it completes (the offline ones: the same motion) and their
frames, and the first-frame latency (first chunk handed over ->
first decoded frame, compilation done beforehand) and the sustained frame rate are printed.

Expected problems (missing or unreadable files, no face, silent audio, unusable checkpoints)
exit with status 1 and a one-line message. A checkpoint that its run's own recorded metrics show
to be clearly undertrained (`vasa_jax.training.run_metrics`) gets one `warning: ...` line first.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from typing import Optional, Sequence

from vasa_jax.data import media
from vasa_jax.inference import emotion_control
from vasa_jax.inference import talking_head
from vasa_jax.inference.talking_head import SampleError
from vasa_jax.training import checkpoint as checkpoint_lib

# Containers `media.write_video` writes (H.264 + AAC).
VIDEO_EXTENSIONS = (".mp4", ".mov")


# ----------------------------------------------------------------------------------------------
# Command line.
# ----------------------------------------------------------------------------------------------
def _floats(count: Optional[int]):
  def parse(text: str) -> list[float]:
    try:
      values = [float(value) for value in text.split(",") if value.strip()]
    except ValueError as error:
      raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of numbers") from (
          error)
    if count is not None and len(values) != count:
      raise argparse.ArgumentTypeError(f"{text!r} must have {count} values")
    return values
  return parse


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog="python -m vasa_jax.sample", description=__doc__.split("\n\n")[0],
      formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--image", required=True, help="photo with one face")
  parser.add_argument("--audio", required=True, help="speech (any format PyAV reads)")
  parser.add_argument("--latent_checkpoint", required=True, help="stage-1 run's --workdir")
  parser.add_argument("--motion_checkpoint", required=True, help="stage-2 run's --workdir")
  parser.add_argument("--output", required=True, help="the mp4 to write")
  parser.add_argument("--gaze", type=_floats(2), help="theta,phi in degrees (default: dropped)")
  parser.add_argument("--distance", type=float, help="head distance (default: dropped)")
  parser.add_argument("--emotion", help="a name (happy, sad, angry, surprise, fear, disgust, "
                      "contempt, neutral) or 8 comma-separated scores (default: dropped)")
  parser.add_argument("--cfg_audio", type=float, help="audio guidance scale (config default)")
  parser.add_argument("--cfg_gaze", type=float, help="gaze guidance scale (config default)")
  parser.add_argument("--steps", type=int, help="denoising steps (config default)")
  parser.add_argument("--seed", type=int, default=0, help="sampling seed")
  parser.add_argument("--batch_size", type=int, default=8, help="frames per decoder call")
  parser.add_argument("--head_motion", type=float, default=1.0,
                      help="head pose deviation scale (0: still head, 1: as generated)")
  parser.add_argument("--pose_from", help="driving video whose head pose is used")
  parser.add_argument("--save_motion", help="an .npz to write z_pose, z_dyn and the controls to")
  parser.add_argument("--wav2vec2_dir", help="overrides the motion config's audio.wav2vec2_dir")
  parser.add_argument("--stream", action="store_true", help="go through the streaming path")
  parser.add_argument("--chunk_frames", type=int, help="--stream chunk length (default: W)")
  return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
  args = _parser().parse_args(argv)
  warning = talking_head.undertrained_warning(args.latent_checkpoint, args.motion_checkpoint)
  if warning:
    print(warning, file=sys.stderr)
  try:
    if os.path.splitext(args.output)[1].lower() not in VIDEO_EXTENSIONS:
      raise SampleError(f"--output {args.output!r} must end in one of {VIDEO_EXTENSIONS}")
    if not (math.isfinite(args.head_motion) and args.head_motion >= 0):
      raise SampleError(f"--head_motion must be a number >= 0, got {args.head_motion:g}")
    if args.save_motion is not None and not args.save_motion.endswith(".npz"):
      raise SampleError(f"--save_motion {args.save_motion!r} must end in .npz")
    if args.pose_from is not None and not os.path.isfile(args.pose_from):
      raise SampleError(f"driving video {args.pose_from!r} does not exist")
    emotion = None
    if args.emotion is not None:
      try:
        emotion = emotion_control.parse_emotion(args.emotion)
      except ValueError as error:
        raise SampleError(f"--emotion: {error}") from None
    # The inputs are checked before the models load.
    face = talking_head.crop_face(talking_head.read_photo(args.image), f"image {args.image!r}")
    waveform = talking_head.read_speech(args.audio)
    head = talking_head.TalkingHead(args.latent_checkpoint, args.motion_checkpoint,
                       wav2vec2_dir=args.wav2vec2_dir, num_steps=args.steps,
                       batch_size=args.batch_size)
    if emotion is not None and len(emotion) != head.sampler.emotion_dim:
      raise SampleError(f"--emotion gives {len(emotion)} scores, the motion model takes "
                        f"{head.sampler.emotion_dim} (it was trained without emotion scores)")
    if args.chunk_frames is not None and args.chunk_frames < 1:
      raise SampleError(f"--chunk_frames must be at least 1, got {args.chunk_frames}")
    report = talking_head.render_video(
        head, face, waveform, args.output, stream=args.stream, chunk_frames=args.chunk_frames,
        head_motion=args.head_motion, pose_from=args.pose_from, motion_path=args.save_motion,
        gaze=args.gaze, distance=args.distance, emotion=emotion, seed=args.seed,
        lambda_audio=args.cfg_audio, lambda_gaze=args.cfg_gaze)
  except (SampleError, checkpoint_lib.CheckpointError, media.MediaError) as error:
    print(f"error: {error}", file=sys.stderr)
    return 1
  print(f"wrote {args.output}: {report['frames']} frames at {head.fps:g} fps "
        f"({report['seconds']:.2f} s of audio)")
  if args.save_motion:
    print(f"wrote {args.save_motion}: z_pose and z_dyn of {report['frames']} frames")
  if args.stream:
    print(f"first-frame latency: {1000 * report['first_frame_latency_s']:.1f} ms after the first "
          f"audio chunk ({report['chunk_seconds']:.2f} s of audio per chunk)")
    print(f"sustained: {report['sustained_fps']:.1f} frames/s "
          f"({report['sustained_fps'] / head.fps:.2f}x real time)")
  return 0


if __name__ == "__main__":
  sys.exit(main())
