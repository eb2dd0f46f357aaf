"""Long audio on SynthTalk: does a minute of speech generate without drift or collapse, and does
memory stay flat with the length?

  python experiments/long_audio_synthtalk.py --workdir=/tmp/motion_synthtalk [--seconds=60] \
      [--window_seconds=10] [--num_speakers=3] [--seeds=0,1] [--output=long_audio.json]

--workdir is a finished `experiments/motion_synthtalk.py` run (its trained stage-1 and stage-2
models, SynthTalk set and motion shards; `vasa_jax.pipeline.paths`).

1. Each of the first --num_speakers held-out speakers (the motion data's test split) says
   --seconds of speech: 6-s pieces made as SynthTalk makes its clips' audio
   (`dataset.clip_audio`), joined.
2. The stage-2 sampler generates its motion offline (gaze and distance dropped) once per seed in
   --seeds.
3. For every consecutive --window_seconds stretch: the head pose variance (the variance over frames
   of each z_pose value, summed), the local pose variance (the same over 2-s pieces, averaged:
   head motion without the slow wander), and the mouth opening read from the motion by the
   stage-2 check's linear probe (`synthtalk_check.RidgeProbe`, fitted on the training clips'
   motion and ground truth): its correlation with the speech envelope (best lag within +-2
   frames, `lip_sync.best_lag_correlation`) and its standard deviation (a collapsed mouth has
   none). Each statistic is averaged over the runs (speakers x seeds: one 10-s stretch of one run
   is a noisy sample); the check compares the last stretch with the first (last/first within
   --tolerance, 20%).
4. Memory: the peak of Python-tracked allocations (`tracemalloc`: numpy arrays included, device
   buffers not) while `talking_head.render_video` writes the mp4 of the first --window_seconds and
   of the whole speech (first speaker, first seed); flat memory keeps the two peaks close.
Writes the JSON report to --output (default: long_audio_synthtalk.json in the workdir), the two
mp4s beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import tracemalloc

import numpy as np

# The repository root, for vasa_jax when run as a script from anywhere.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from vasa_jax import pipeline
from vasa_jax.data import media
from vasa_jax.data import records
from vasa_jax.data.synthtalk import dataset
from vasa_jax.evaluators import lip_sync
from vasa_jax.evaluators import synthtalk_check
from vasa_jax.inference import talking_head

SEGMENT_SECONDS = 6.0  # the speech is made of pieces this long (SynthTalk clips are 3-6 s)
PIECE_SECONDS = 2.0  # the local pose variance is taken over pieces this long
FPS = 25  # SynthTalk's and the models' frame rate


def window_statistics(motion: np.ndarray, mouth: np.ndarray, envelope: np.ndarray) -> dict:
  """Pose variance, mouth-vs-envelope correlation and mouth spread of one stretch of frames:
  motion [T, M] ([z_pose (7), z_dyn]), probe mouth [T], speech envelope [T]."""
  return {"pose_variance": float(motion[:, :7].var(axis=0).sum()),
          "local_pose_variance": float(np.mean([
              piece[:, :7].var(axis=0).sum() for piece in np.array_split(
                  motion, max(1, round(len(motion) / (PIECE_SECONDS * FPS))))])),
          "mouth_envelope_correlation": float(lip_sync.best_lag_correlation(mouth, envelope)[0]),
          "mouth_std": float(mouth.std())}


def stretch_profile(motion: np.ndarray, mouth: np.ndarray, envelope: np.ndarray,
                    frames: int) -> list[dict]:
  """`window_statistics` of each consecutive stretch of `frames` frames (a shorter rest is
  dropped)."""
  return [window_statistics(motion[start:start + frames], mouth[start:start + frames],
                            envelope[start:start + frames])
          for start in range(0, len(motion) - frames + 1, frames)]


def mean_profile(profiles: list[list[dict]]) -> list[dict]:
  """Each stretch's statistics averaged over runs (profiles of equal length)."""
  return [{name: float(np.mean([profile[index][name] for profile in profiles]))
           for name in profiles[0][index]} for index in range(len(profiles[0]))]


def compare_ends(motion: np.ndarray, mouth: np.ndarray, envelope: np.ndarray, frames: int,
                 tolerance: float) -> dict:
  """`window_statistics` of the first and the last `frames` frames, each statistic's last/first
  ratio and whether it lies within `tolerance` of 1."""
  profile = stretch_profile(motion, mouth, envelope, frames)
  return compare_stretches(profile[0], profile[-1], tolerance)


def compare_stretches(first: dict, last: dict, tolerance: float) -> dict:
  """Each statistic's last/first ratio and whether it lies within `tolerance` of 1."""
  ratios = {name: last[name] / first[name] if first[name] else float("nan") for name in first}
  within = {name: bool(abs(ratio - 1.0) <= tolerance) for name, ratio in ratios.items()}
  return {"first": first, "last": last, "last_over_first": ratios,
          "within_tolerance": within, "all_within_tolerance": all(within.values())}


def peak_render_memory(head: talking_head.TalkingHead, face: np.ndarray, waveform: np.ndarray,
                       path: str, seed: int) -> tuple[float, float]:
  """(peak MB of Python-tracked allocations, seconds) while `render_video` writes `path`."""
  tracemalloc.start()
  start = time.perf_counter()
  talking_head.render_video(head, face, waveform, path, progress=False, seed=seed)
  seconds = time.perf_counter() - start
  peak = tracemalloc.get_traced_memory()[1]
  tracemalloc.stop()
  return peak / 2**20, seconds


def speech_of(speaker_id: str, seconds: float, seed: int) -> np.ndarray:
  """`seconds` of float32 speech in `speaker_id`'s voice (SynthTalk clip audios, joined)."""
  speaker = dataset.make_speaker(seed, int(speaker_id[len("synth"):]))
  # One clip_audio call fills only its first sentences' worth (about 12 s here) and leaves the rest
  # silent: the speech is made of SEGMENT_SECONDS pieces, each a SynthTalk clip's audio.
  segment = round(SEGMENT_SECONDS * records.AUDIO_SAMPLE_RATE)
  samples = round(seconds * records.AUDIO_SAMPLE_RATE)
  pieces = [dataset.clip_audio(np.random.default_rng([seed, 60, index]), speaker, segment,
                               dataset.espeak_available())[0]
            for index in range(-(-samples // segment))]
  return np.concatenate(pieces)[:samples].astype(np.float32) / 32768.0


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--workdir", required=True, help="a finished motion_synthtalk.py run")
  parser.add_argument("--seconds", type=float, default=60.0, help="length of the speech")
  parser.add_argument("--window_seconds", type=float, default=10.0,
                      help="length of each stretch compared")
  parser.add_argument("--tolerance", type=float, default=0.2, help="allowed |last/first - 1|")
  parser.add_argument("--num_speakers", type=int, default=3, help="held-out speakers used")
  parser.add_argument("--seeds", default="0,1", help="sampling seeds, comma-separated")
  parser.add_argument("--output", help="JSON report (default: in the workdir)")
  args = parser.parse_args(argv)
  seeds = [int(seed) for seed in args.seeds.split(",")]
  where = pipeline.paths(args.workdir)
  head = talking_head.TalkingHead(where["latent"], where["motion"])
  train_clips = synthtalk_check.read_motion_split(where["motion_data"], "train")
  test_clips = synthtalk_check.read_motion_split(where["motion_data"], "test")
  probe = synthtalk_check.RidgeProbe(
      np.concatenate([clip["motion"] for clip in train_clips]),
      np.concatenate([synthtalk_check.probe_targets(clip) for clip in train_clips]))

  speaker_ids = sorted({clip["speaker_id"] for clip in test_clips})[:args.num_speakers]
  num_frames = round(args.seconds * head.fps)
  window_frames = round(args.window_seconds * head.fps)
  runs, motion_seconds = [], 0.0
  for speaker_id in speaker_ids:
    waveform = speech_of(speaker_id, args.seconds, seed=0)
    features = synthtalk_check.fit_to_length(head.featurizer(waveform), num_frames)
    envelope = media.speech_envelope(waveform, num_frames, head.fps, records.AUDIO_SAMPLE_RATE)
    for seed in seeds:
      start = time.perf_counter()
      motion = head.sampler.generate(features, seed=seed)  # [T, M]
      motion_seconds += time.perf_counter() - start
      mouth = probe(motion)[:, 0]  # [T]
      runs.append({"speaker_id": speaker_id, "seed": seed,
                   "stretches": stretch_profile(motion, mouth, envelope, window_frames)})
  profile = mean_profile([run["stretches"] for run in runs])
  report = {"workdir": args.workdir, "speaker_ids": speaker_ids, "seeds": seeds,
            "seconds": args.seconds, "frames": num_frames,
            "window_seconds": args.window_seconds, "tolerance": args.tolerance,
            "motion_generation_seconds": motion_seconds,
            "mean_stretches": profile,
            "drift": compare_stretches(profile[0], profile[-1], args.tolerance),
            "runs": runs}

  # Memory, first speaker and seed; its face: the first frame of one of its held-out clips.
  speaker_id, seed = speaker_ids[0], seeds[0]
  waveform = speech_of(speaker_id, args.seconds, seed=0)
  clip = next(clip for clip in test_clips if clip["speaker_id"] == speaker_id)
  face = synthtalk_check.heldout_frames(where["synthtalk"], {clip["clip_id"]})[clip["clip_id"]][0]
  output = args.output or os.path.join(args.workdir, "long_audio_synthtalk.json")
  output_dir = os.path.dirname(os.path.abspath(output))  # the two mp4s go beside the JSON
  os.makedirs(output_dir, exist_ok=True)
  memory = {}
  for name, samples in (("first_window", round(args.window_seconds * records.AUDIO_SAMPLE_RATE)),
                        ("whole", len(waveform))):
    peak_mb, seconds = peak_render_memory(head, face, waveform[:samples],
                                          os.path.join(output_dir, f"long_audio_{name}.mp4"),
                                          seed)
    memory[name] = {"audio_seconds": samples / records.AUDIO_SAMPLE_RATE,
                    "peak_traced_mb": peak_mb, "render_seconds": seconds}
  memory["whole_over_first_window"] = (memory["whole"]["peak_traced_mb"]
                                       / memory["first_window"]["peak_traced_mb"])
  report["memory"] = memory
  with open(output, "w", encoding="utf-8") as f:
    json.dump(report, f, indent=1)
  print(json.dumps({key: report[key] for key in ("mean_stretches", "drift", "memory")}, indent=1))
  return report


if __name__ == "__main__":
  main()
