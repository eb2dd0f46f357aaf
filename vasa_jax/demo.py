r"""The main job, end to end on one machine: a face that talks, from the first command.

  python -m vasa_jax.demo --workdir=/tmp/vasa_demo [--quick]

1. generates a SynthTalk set (synthetic talking heads with ground truth, real espeak-ng speech);
2. trains stage 1, the face latent model (`configs/latent.py:demo`);
3. encodes every clip's motion with it (`data_prep.extract_motion`'s library);
4. trains stage 2, the motion diffusion model (`configs/motion.py:demo`);
5. makes held-out speakers (never trained on) speak held-out speech, and the shipped photo
   (`vasa_jax/assets/`) speak the shipped sentence;
6. scores the result (`vasa_jax.evaluators.synthtalk_check`).
Steps 1-4 are `vasa_jax.pipeline.run`: a rerun reuses what is finished. Writes, in the workdir:
  talking_synthtalk.mp4  held-out speakers, each speaking a held-out clip's speech (its audio);
  side_by_side.mp4       the same, generated (left) next to SynthTalk's real clip (right);
  talking_photo.mp4      the shipped photo speaking the shipped sentence;
  contact_sheet.png      frames of each held-out clip: generated row above the real row;
  summary.json           held-out reconstruction PSNR, mouth vs speech (motion codes and pixels)
                         against a shuffled-audio control, gaze error with and without gaze
                         guidance, the seconds each step took;
  latent/, motion/       the two training runs (for `vasa_jax.sample`, `vasa_jax.app`, TensorBoard).
The videos have the models' resolution (64 px), upscaled by --display_scale for viewing.
`--quick` runs every step at a smoke-test scale (about 3 minutes; its faces are not trained).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any, Optional, Sequence

import numpy as np
from PIL import Image

from vasa_jax import pipeline
from vasa_jax.data import media
from vasa_jax.data import records
from vasa_jax.evaluators import synthtalk_check
from vasa_jax.inference import talking_head
from vasa_jax.training import config_files

ASSETS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "assets")
DEFAULT_PHOTO = os.path.join(ASSETS_DIR, "astronaut.jpg")
DEFAULT_SPEECH = os.path.join(ASSETS_DIR, "speech.wav")
# The demo's data: enough speakers that held-out faces are rendered from what was learnt on
# others; `--quick` shrinks everything to a smoke test of the same steps.
DEMO_DATA = pipeline.SynthTalkSettings(num_speakers=100, clips_per_speaker=3, resolution=64,
                                       min_seconds=2.0, max_seconds=4.0, test_fraction=0.2)
QUICK_DATA = pipeline.SynthTalkSettings(num_speakers=12, clips_per_speaker=2, resolution=64,
                                        min_seconds=2.0, max_seconds=3.0, test_fraction=0.25)
QUICK_STEPS = {"latent": 30, "motion": 30}
QUICK_DENOISING_STEPS = 5


def _video_clips(test_clips: Sequence[dict], count: int) -> list[dict]:
  """Up to `count` held-out clips of different speakers, for the videos."""
  chosen, speakers = [], set()
  for clip in test_clips:
    if clip["speaker_id"] not in speakers:
      speakers.add(clip["speaker_id"])
      chosen.append(clip)
  return chosen[:count]


def _contact_sheet(path: str, pairs: Sequence[tuple[np.ndarray, np.ndarray]], columns: int,
                   tile: int) -> None:
  """For each (generated, real) pair of videos: `columns` evenly spaced frames of the generated
  one in a row above the same frames of the real one."""
  sheet = Image.new("RGB", (columns * tile, 2 * len(pairs) * tile), (255, 255, 255))
  for index, (generated, real) in enumerate(pairs):
    times = np.linspace(0, len(generated) - 1, columns).round().astype(int)
    for row, video in enumerate((generated, real)):
      for column, t in enumerate(times):
        image = Image.fromarray(video[t]).resize((tile, tile), Image.Resampling.BICUBIC)
        sheet.paste(image, (column * tile, (2 * index + row) * tile))
  sheet.save(path)


def make_videos(workdir: str, head: talking_head.TalkingHead, test_clips: Sequence[dict],
                rendered: dict[str, np.ndarray], real: dict[str, np.ndarray], count: int,
                display_scale: int) -> dict[str, str]:
  """talking_synthtalk.mp4, side_by_side.mp4 and contact_sheet.png from held-out clips."""
  clips = _video_clips(test_clips, count)
  generated = [rendered[clip["clip_id"]] for clip in clips]
  truth = [real[clip["clip_id"]][:len(video)] for clip, video in zip(clips, generated)]
  audio = np.concatenate([np.asarray(clip["audio"], np.float32)[
      :round(len(video) * records.AUDIO_SAMPLE_RATE / head.fps)] / 32768.0
      for clip, video in zip(clips, generated)])
  outputs = {name: os.path.join(workdir, name) for name in (
      "talking_synthtalk.mp4", "side_by_side.mp4", "contact_sheet.png")}
  media.write_video(outputs["talking_synthtalk.mp4"],
                    talking_head.upscale(np.concatenate(generated), display_scale), head.fps, audio=audio,
                    sample_rate=records.AUDIO_SAMPLE_RATE)
  media.write_video(outputs["side_by_side.mp4"],
                    talking_head.upscale(np.concatenate([np.concatenate([g, t], axis=2)
                                             for g, t in zip(generated, truth)]), display_scale),
                    head.fps, audio=audio, sample_rate=records.AUDIO_SAMPLE_RATE)
  _contact_sheet(outputs["contact_sheet.png"], list(zip(generated, truth)), columns=8,
                 tile=64 * display_scale // 2)
  return outputs


def main(argv: Optional[Sequence[str]] = None) -> int:
  parser = argparse.ArgumentParser(prog="python -m vasa_jax.demo",
                                   description=__doc__.split("\n\n")[0],
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--workdir", required=True, help="where everything is written")
  parser.add_argument("--quick", action="store_true",
                      help="every step at a smoke-test scale (~3 minutes, untrained faces)")
  parser.add_argument("--latent_config", default=None,
                      help="stage-1 config (default: configs/latent.py:demo)")
  parser.add_argument("--motion_config", default=None,
                      help="stage-2 config (default: configs/motion.py:demo)")
  parser.add_argument("--photo", default=DEFAULT_PHOTO, help="the photo to animate")
  parser.add_argument("--speech", default=DEFAULT_SPEECH, help="the speech it says")
  parser.add_argument("--num_videos", type=int, default=3,
                      help="held-out clips (of different speakers) in the SynthTalk videos")
  parser.add_argument("--eval_clips", type=int, default=16,
                      help="held-out clips scored in summary.json (spread over the speakers)")
  parser.add_argument("--display_scale", type=int, default=4,
                      help="the videos' frames are upscaled by this for viewing")
  args = parser.parse_args(argv)
  try:
    return run(args)
  except (pipeline.PipelineError, config_files.ConfigFileError, talking_head.SampleError,
          FileNotFoundError) as error:
    print(f"error: {error}", file=sys.stderr)
    return 1


def run(args: argparse.Namespace) -> int:
  started = time.perf_counter()
  workdir = os.path.abspath(args.workdir)
  latent_config = config_files.load(
      args.latent_config or config_files.default_path("configs/latent.py") + ":demo")
  motion_config = config_files.load(
      args.motion_config or config_files.default_path("configs/motion.py") + ":demo")
  data = QUICK_DATA if args.quick else DEMO_DATA
  if args.quick:
    latent_config.total_steps = QUICK_STEPS["latent"]
    motion_config.total_steps = QUICK_STEPS["motion"]
    motion_config.sampling.num_steps = QUICK_DENOISING_STEPS
  for config in (latent_config, motion_config):
    config.checkpoint_every_steps = min(config.checkpoint_every_steps, config.total_steps)
    config.seed = data.seed
  step_number = iter(range(1, 7))
  announce = lambda message: print(f"{next(step_number)}/6 {message}", flush=True)
  seconds = pipeline.run(workdir, data, latent_config, motion_config, announce)

  where = pipeline.paths(workdir)
  announce("held-out speakers speak held-out speech; the photo speaks the sentence")
  start = time.perf_counter()
  head = talking_head.TalkingHead(where["latent"], where["motion"])
  report, details = synthtalk_check.evaluate_runs(head, where["motion_data"], where["synthtalk"],
                                                  seed=data.seed, max_clips=args.eval_clips)
  test_clips, rendered, real = details["test_clips"], details["rendered"], details["real"]
  outputs = make_videos(workdir, head, test_clips, rendered, real, args.num_videos,
                        args.display_scale)
  outputs["talking_photo.mp4"] = os.path.join(workdir, "talking_photo.mp4")
  talking_head.generate_video(head, args.photo, args.speech, outputs["talking_photo.mp4"],
                              progress=False, output_scale=args.display_scale)
  seconds["videos_and_scores"] = round(time.perf_counter() - start, 1)

  announce("summary")
  summary: dict[str, Any] = {
      "configs": {"latent": args.latent_config or "configs/latent.py:demo",
                  "motion": args.motion_config or "configs/motion.py:demo"},
      "quick": bool(args.quick),
      "training_steps": {"latent": latent_config.total_steps,
                         "motion": motion_config.total_steps},
      **{key: value for key, value in report.items() if key != "pixels_per_clip"},
      "seconds": dict(seconds, total=round(time.perf_counter() - started, 1)),
      "outputs": outputs,
  }
  with open(os.path.join(workdir, "summary.json"), "w", encoding="utf-8") as f:
    json.dump(summary, f, indent=1)
  generated, real_clips = summary["pixels"]["generated"], summary["pixels"]["real_clips"]
  print(f"held-out reconstruction PSNR {report['heldout_reconstruction']['psnr_db']:.2f} dB; "
        f"lip sync on the "
        f"pixels (mouth vs speech envelope): generated "
        f"{generated.get('mouth_envelope_correlation', float('nan')):.2f}, shuffled audio "
        f"{generated.get('shuffled_audio_correlation', float('nan')):.2f}, real clips "
        f"{real_clips.get('mouth_envelope_correlation', float('nan')):.2f}; face found in "
        f"{100 * generated.get('face_found_rate', 0):.0f}% of generated frames")
  print(f"gaze error (degrees): {report['motion']['gaze_error_degrees']}")
  for name, path in outputs.items():
    print(f"wrote {path}")
  print(f"{workdir}/summary.json; {summary['seconds']['total'] / 60:.1f} minutes in all")
  return 0


if __name__ == "__main__":
  sys.exit(main())
