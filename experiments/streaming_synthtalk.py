"""Streaming vs offline on SynthTalk: does the live path move the mouth with the speech as well as
offline sampling does?

  python experiments/streaming_synthtalk.py --workdir=/tmp/motion_synthtalk [--chunk_frames=10] \
      [--seed=0] [--max_clips=0] [--output=streaming_synthtalk.json]

--workdir is a finished `experiments/motion_synthtalk.py` or `python -m vasa_jax.demo` run (its
trained stage-1 and stage-2 models and motion shards; `vasa_jax.pipeline.paths`).

For every held-out clip of the motion data's test split (or the first --max_clips), from its
speech waveform and with the clip's gaze and distance and --seed:
  - offline: `head.sampler.generate(head.featurizer(waveform))`;
  - streaming: `streaming.stream_motion` with the audio in chunks of --chunk_frames frames;
and the mouth opening read from each motion by the stage-2 check's linear probe
(`synthtalk_check.RidgeProbe`, fitted on the training clips' motion and ground truth), correlated
with the clip's ground-truth mouth opening (the check's `mouth_correlation.generated`) and with its
speech envelope (best lag within +-2 frames). Reports the means over clips, streamed minus
offline, the largest |streamed - offline| motion difference, and whether it is within the 0.05
tolerance of issue 25.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

# The repository root, for vasa_jax when run as a script from anywhere.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from vasa_jax import pipeline
from vasa_jax.evaluators import lip_sync
from vasa_jax.evaluators import synthtalk_check
from vasa_jax.inference import streaming
from vasa_jax.inference import talking_head

TOLERANCE = 0.05  # allowed |streamed - offline| of the mean mouth correlation


def clip_waveform(clip: dict) -> np.ndarray:
  """A motion record's speech as float32 [N] at 16 kHz."""
  if int(clip["audio_sample_rate"]) != 16_000:
    raise SystemExit(f"clip {clip['clip_id']} has audio at {clip['audio_sample_rate']} Hz, not "
                     "16 kHz")
  return np.asarray(clip["audio"], np.float32) / 32768.0


def mouth_scores(probe: synthtalk_check.RidgeProbe, motion: np.ndarray, clip: dict) -> dict:
  """Probe mouth of `motion` [T, M] against the clip's ground-truth mouth and speech envelope."""
  num_frames = min(len(motion), int(clip["num_frames"]))
  mouth = probe(motion[:num_frames])[:, 0]
  truth = synthtalk_check.probe_targets(clip)[:num_frames, 0]
  envelope = synthtalk_check.envelope_of(clip)[:num_frames]
  return {"mouth_vs_truth": synthtalk_check.correlation(mouth, truth),
          "mouth_vs_envelope": float(np.nan_to_num(
              lip_sync.best_lag_correlation(mouth, envelope)[0]))}


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--workdir", required=True, help="a finished motion_synthtalk.py/demo run")
  parser.add_argument("--chunk_frames", type=int, default=10,
                      help="streamed audio chunk in video frames")
  parser.add_argument("--seed", type=int, default=0, help="sampling seed")
  parser.add_argument("--max_clips", type=int, default=0, help="held-out clips used (0: all)")
  parser.add_argument("--output", help="JSON report (default: in the workdir)")
  args = parser.parse_args(argv)
  where = pipeline.paths(args.workdir)
  head = talking_head.TalkingHead(where["latent"], where["motion"])
  train_clips = synthtalk_check.read_motion_split(where["motion_data"], "train")
  test_clips = synthtalk_check.read_motion_split(where["motion_data"], "test")
  if args.max_clips > 0:
    test_clips = test_clips[:args.max_clips]
  probe = synthtalk_check.RidgeProbe(
      np.concatenate([clip["motion"] for clip in train_clips]),
      np.concatenate([synthtalk_check.probe_targets(clip) for clip in train_clips]))

  per_clip, seconds = [], {"offline": 0.0, "streaming": 0.0}
  for clip in test_clips:
    waveform = clip_waveform(clip)
    controls = dict(gaze=clip["gaze_main"], distance=float(clip["distance_main"]),
                    seed=args.seed)
    start = time.perf_counter()
    offline = head.sampler.generate(head.featurizer(waveform), **controls)
    seconds["offline"] += time.perf_counter() - start
    start = time.perf_counter()
    streamed = np.concatenate(list(streaming.stream_motion(
        head, streaming.audio_chunks(waveform, args.chunk_frames, head.fps), **controls)))
    seconds["streaming"] += time.perf_counter() - start
    per_clip.append({"clip_id": clip["clip_id"], "frames": len(offline),
                     "offline": mouth_scores(probe, offline, clip),
                     "streamed": mouth_scores(probe, streamed, clip),
                     "max_abs_motion_difference": float(np.abs(streamed - offline).max())})

  def mean(path, name):
    return float(np.mean([entry[path][name] for entry in per_clip]))

  summary = {}
  for name in ("mouth_vs_truth", "mouth_vs_envelope"):
    summary[name] = {"offline": mean("offline", name), "streamed": mean("streamed", name),
                     "streamed_minus_offline": mean("streamed", name) - mean("offline", name)}
  summary["max_abs_motion_difference"] = max(entry["max_abs_motion_difference"]
                                             for entry in per_clip)
  summary["within_tolerance"] = bool(
      abs(summary["mouth_vs_truth"]["streamed_minus_offline"]) <= TOLERANCE)
  report = {"workdir": args.workdir, "chunk_frames": args.chunk_frames, "seed": args.seed,
            "num_test_clips": len(test_clips), "window": head.sampler.window,
            "features": head.featurizer.kind, "tolerance": TOLERANCE,
            "seconds": seconds, "summary": summary, "per_clip": per_clip}
  output = args.output or os.path.join(args.workdir, "streaming_synthtalk.json")
  os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
  with open(output, "w", encoding="utf-8") as f:
    json.dump(report, f, indent=1)
  print(json.dumps({key: report[key] for key in report if key != "per_clip"}, indent=1))
  return report


if __name__ == "__main__":
  main()
