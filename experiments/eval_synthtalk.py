"""VASA-1's Table 1 on SynthTalk: held-out real clips against this project's generations for the
same speech, scored by `python -m vasa_jax.evaluate`'s library with the SynthTalk-trained SyncNet
and CAPP.

  python experiments/eval_synthtalk.py --demo_dir=/tmp/vasa_demo --workdir=/tmp/eval_synthtalk \
      --syncnet=SYNCNET.npz --syncnet_width=0.25 --capp_checkpoint=CAPP_DIR \
      --output=experiments/results/eval_synthtalk.json

1. From a finished `python -m vasa_jax.demo --workdir=DEMO_DIR` (stage 1 in latent/, stage 2 in
   motion/, SynthTalk in synthtalk/, extracted motion in motion_data/; only read), takes
   `--num_clips` held-out clips (speakers never trained on, one per speaker first) at least
   `--min_seconds` long (CAPP needs a 3 s window).
2. Writes each real clip as an mp4 with its speech (real/), and generates the same speaker (its
   clip's first frame) speaking the same speech with the demo's models and controls (the clip's
   main gaze and head distance, as the demo's check) through `talking_head.render_video`
   (generated/). Both are upscaled by `--display_scale` (the tracker needs more than 64 px).
   A rerun on the same `--workdir` with the same clips and settings reuses the videos
   (`videos.json` records what they were made with), so rescoring with other weights is quick.
3. Scores both folders with `vasa_jax.evaluate.evaluate`: Sc, SD and offset (SyncNet), CAPP, Delta
   P, the mouth-envelope correlation; for the generations also LMD to the real clips and FVD25 /
   FID against them (with `--i3d`, `--inception`); a metric without weights is left out with the
   evaluator's note, a clip the tracker finds no face in is listed as skipped.
Writes `--output` (.json: both sets' full results, the settings) and the same name with .md (the
table: rows real clips and generated, VASA-1 Table 1's columns first).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any, Optional, Sequence

import numpy as np

# The repository root (experiments run as scripts from anywhere).
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from vasa_jax import evaluate as evaluate_lib
from vasa_jax import pipeline
from vasa_jax.data import media
from vasa_jax.data import records
from vasa_jax.evaluators import report
from vasa_jax.evaluators import synthtalk_check
from vasa_jax.inference import talking_head

# The metrics of each row; FVD25, FID and LMD compare the generations with the real clips.
REAL_METRICS = ("sync", "capp", "pose", "lip")
GENERATED_METRICS = REAL_METRICS + ("fvd", "fid", "lmd")
# (key, heading) of the markdown table: VASA-1 Table 1's columns, then the others that apply.
COLUMNS = report.TABLE_1 + tuple(
    column for column in report.OTHER_COLUMNS if column[0] in ("fid", "lmd", "sync_offset",
                                                               "mouth_envelope_correlation"))


def choose_clips(motion_data_dir: str, fps: float, num_clips: int, min_seconds: float
                 ) -> list[dict]:
  """Up to `num_clips` held-out motion records of at least `min_seconds`, speakers spread."""
  long_enough = [clip for clip in synthtalk_check.read_motion_split(motion_data_dir, "test")
                 if len(clip["motion"]) >= round(min_seconds * fps)]
  return synthtalk_check.spread_over_speakers(long_enough, num_clips)


def file_name(clip_id: str) -> str:
  """The video file name (no extension) of a clip id ("synth00004/00000" -> "synth00004_00000")."""
  return clip_id.replace("/", "_")


def write_videos(where: dict[str, str], clips: Sequence[dict], workdir: str, display_scale: int,
                 seed: int, made_with: dict[str, Any]) -> dict[str, str]:
  """real/<clip>.mp4 and generated/<clip>.mp4 for each clip, unless `workdir`'s videos.json says
  they were made with the same `made_with`; returns the two folders."""
  folders = {side: os.path.join(workdir, side) for side in ("real", "generated")}
  record_path = os.path.join(workdir, "videos.json")
  if os.path.exists(record_path):
    with open(record_path, encoding="utf-8") as file:
      if json.load(file) == made_with:
        return folders
  for folder in folders.values():
    os.makedirs(folder, exist_ok=True)
    for name in os.listdir(folder):  # videos of other clips or settings
      os.remove(os.path.join(folder, name))
  head = talking_head.TalkingHead(where["latent"], where["motion"])
  frames = synthtalk_check.heldout_frames(where["synthtalk"], {clip["clip_id"] for clip in clips})
  for clip in clips:
    real = frames[clip["clip_id"]]
    name = file_name(clip["clip_id"])
    waveform = np.asarray(clip["audio"], np.float32) / 32768.0
    waveform = waveform[:round(len(real) * records.AUDIO_SAMPLE_RATE / head.fps)]
    media.write_video(os.path.join(folders["real"], f"{name}.mp4"),
                      talking_head.upscale(real, display_scale), head.fps, audio=waveform,
                      sample_rate=records.AUDIO_SAMPLE_RATE)
    talking_head.render_video(
        head, real[0], waveform, os.path.join(folders["generated"], f"{name}.mp4"),
        progress=False, output_scale=display_scale, gaze=clip["gaze_main"],
        distance=float(clip["distance_main"]), seed=seed)
  with open(record_path, "w", encoding="utf-8") as file:
    json.dump(made_with, file, indent=2)
  return folders


def score(folder: str, output: str, metrics: Sequence[str], args: argparse.Namespace,
          reference: Optional[str] = None) -> dict[str, Any]:
  """`vasa_jax.evaluate`'s results for the mp4s of `folder`."""
  argv = [f"--generated={folder}", f"--output={output}", f"--metrics={','.join(metrics)}",
          f"--syncnet_width={args.syncnet_width}"]
  for flag in ("syncnet", "capp_checkpoint", "i3d", "inception"):
    if getattr(args, flag):
      argv.append(f"--{flag}={getattr(args, flag)}")
  if reference:
    argv.append(f"--reference={reference}")
  return evaluate_lib.evaluate(evaluate_lib._parser().parse_args(argv))  # pylint: disable=protected-access


def markdown_table(rows: dict[str, dict[str, Any]]) -> str:
  """Rows label -> evaluator results; a column appears when some row has its value."""
  columns = [(key, title) for key, title in COLUMNS
             if any(key in results["overall"] for results in rows.values())]
  lines = ["| | clips scored / chosen | " + " | ".join(title for _, title in columns) + " |",
           "|---|---:|" + "---:|" * len(columns)]
  for label, results in rows.items():
    cells = [f"{results['overall'][key]:.3f}" if key in results["overall"] else "—"
             for key, _ in columns]
    scored = max(results["counts"]["scored"].values(), default=0)
    lines.append(f"| {label} | {scored} / {results['counts']['clips']} | " + " | ".join(cells)
                 + " |")
  notes = sorted({note for results in rows.values() for note in results["notes"]})
  skipped = [f"{label}: {item['clip']} ({item['metric']}): {item['reason']}"
             for label, results in rows.items() for item in results["skipped"]]
  return "\n".join(lines + [""] + [f"- {line}" for line in notes + skipped]) + "\n"


def table_text(results: dict[str, Any]) -> str:
  """The .md file: which networks scored, then `markdown_table` of the rows."""
  settings = results["settings"]
  weights = (f"SyncNet `{settings['syncnet']}` (width {settings['syncnet_width']}), CAPP "
             f"`{settings['capp_checkpoint']}`, I3D `{settings['i3d']}`, Inception "
             f"`{settings['inception']}`; {len(settings['clips'])} held-out clips of "
             f"`{settings['demo_dir']}`.")
  return f"Scored with {weights}\n\n" + markdown_table(results["rows"])


def main(argv: Optional[Sequence[str]] = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--demo_dir", required=True, help="a finished `vasa_jax.demo` workdir")
  parser.add_argument("--workdir", required=True, help="where the videos are written")
  parser.add_argument("--output", required=True, help="the results .json (and .md beside it)")
  parser.add_argument("--syncnet", help="SynthTalk-trained SyncNet weights (.npz)")
  parser.add_argument("--syncnet_width", type=float, default=0.25,
                      help="channel width of those weights")
  parser.add_argument("--capp_checkpoint", help="a trained CAPP directory")
  parser.add_argument("--i3d", help="converted I3D weights (.npz), for FVD25")
  parser.add_argument("--inception", help="converted FID Inception weights (.npz), for FID")
  parser.add_argument("--num_clips", type=int, default=8,
                      help="held-out clips (the tracker finds no face in some generated ones)")
  parser.add_argument("--min_seconds", type=float, default=3.0,
                      help="shortest clip used (CAPP needs one 3 s window)")
  parser.add_argument("--display_scale", type=int, default=4)
  parser.add_argument("--seed", type=int, default=0, help="the motion sampler's seed")
  args = parser.parse_args(argv)
  if not args.output.endswith(".json"):
    print(f"error: --output {args.output!r} must end in .json", file=sys.stderr)
    return 1
  where = pipeline.paths(args.demo_dir)
  missing = [path for path in (where["latent"], where["motion"], where["synthtalk"],
                               where["motion_data"]) if not os.path.isdir(path)]
  if missing:
    print(f"error: --demo_dir {args.demo_dir!r} lacks {', '.join(missing)} (run "
          "`python -m vasa_jax.demo --workdir=DIR` first)", file=sys.stderr)
    return 1
  start = time.perf_counter()
  fps = float(records.read_manifest(where["motion_data"])["fps"])
  clips = choose_clips(where["motion_data"], fps, args.num_clips, args.min_seconds)
  if not clips:
    print(f"error: no held-out clip of {args.demo_dir} lasts {args.min_seconds} s",
          file=sys.stderr)
    return 1
  made_with = {"demo_dir": os.path.abspath(args.demo_dir), "clips": [c["clip_id"] for c in clips],
               "display_scale": args.display_scale, "seed": args.seed}
  folders = write_videos(where, clips, args.workdir, args.display_scale, args.seed, made_with)
  video_seconds = time.perf_counter() - start
  try:
    rows = {"real clips": score(folders["real"], os.path.join(args.workdir, "real.json"),
                                REAL_METRICS, args),
            "generated": score(folders["generated"],
                               os.path.join(args.workdir, "generated.json"), GENERATED_METRICS,
                               args, reference=folders["real"])}
  except evaluate_lib.EvaluationError as error:
    print(f"error: {error}", file=sys.stderr)
    return 1
  results = {
      "rows": rows,
      "settings": {**made_with, "syncnet": args.syncnet, "syncnet_width": args.syncnet_width,
                   "capp_checkpoint": args.capp_checkpoint, "i3d": args.i3d,
                   "inception": args.inception, "display_scale": args.display_scale,
                   "seed": args.seed, "video_seconds": round(video_seconds, 1),
                   "score_seconds": round(time.perf_counter() - start - video_seconds, 1)}}
  os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
  with open(args.output, "w", encoding="utf-8") as file:
    json.dump(results, file, indent=2)
  table = table_text(results)
  with open(args.output[:-len(".json")] + ".md", "w", encoding="utf-8") as file:
    file.write(table)
  print(table)
  return 0


if __name__ == "__main__":
  sys.exit(main())
