"""Stage-2 learning check on SynthTalk: does generated motion, and the video rendered from it,
follow the speech and the gaze?

  python experiments/motion_synthtalk.py --workdir=/tmp/motion_synthtalk \
      [--latent_config=configs/latent.py:small] [--motion_config=configs/motion.py:tiny]

1. Generates a SynthTalk set (64 px, 40 speakers x 6 clips of 3-6 s; 20% of the speakers held
   out), trains stage 1 (perceptual terms off: no pretrained networks here), extracts the
   stage-2 shards (log-mel speech features: no pretrained Wav2Vec2 exists here) and trains stage 2:
   `vasa_jax.pipeline.run`, every step skipped when its output is complete (reruns resume).
2. Scores the pair on the held-out speakers' speech (never trained on) with
   `vasa_jax.evaluators.synthtalk_check.evaluate_runs`: a linear probe's mouth opening and gaze
   of the generated motion against the ground truth and a shuffled-audio control, Delta P,
   window-boundary continuity, gaze error with and without gaze guidance; the generated motion
   rendered on each clip's first frame and its mouth read back from the pixels by the
   data-preparation tracker (correlation with the speech envelope and the true mouth, face-found
   rate), beside the same measures on the real clips and the held-out reconstruction (real motion
   rendered) as stage 1's ceiling.
Writes `motion_synthtalk.json` in the workdir.
"""

from __future__ import annotations

import argparse
import json
import os

from vasa_jax import pipeline
from vasa_jax.evaluators import synthtalk_check
from vasa_jax.inference import talking_head
from vasa_jax.training import config_files

# The repository root: the default configs are its files.
REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--latent_config", default=os.path.join(REPOSITORY,
                                                              "configs/latent.py:small"))
  parser.add_argument("--motion_config", default=os.path.join(REPOSITORY,
                                                              "configs/motion.py:tiny"))
  parser.add_argument("--latent_steps", type=int, help="stage-1 steps (default: the config's)")
  parser.add_argument("--motion_steps", type=int, default=3000)
  parser.add_argument("--num_speakers", type=int, default=40)
  parser.add_argument("--clips_per_speaker", type=int, default=6)
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args(argv)
  data = pipeline.SynthTalkSettings(num_speakers=args.num_speakers,
                                    clips_per_speaker=args.clips_per_speaker, resolution=64,
                                    min_seconds=3.0, max_seconds=6.0, test_fraction=0.2,
                                    seed=args.seed)
  latent = config_files.load(args.latent_config)
  motion = config_files.load(args.motion_config)
  latent.update(seed=args.seed, total_steps=args.latent_steps or latent.total_steps,
                eval_every_steps=0, log_every_steps=100)
  latent.checkpoint_every_steps = latent.total_steps
  motion.update(seed=args.seed, total_steps=args.motion_steps, eval_every_steps=0)
  motion.checkpoint_every_steps = motion.total_steps
  seconds = pipeline.run(args.workdir, data, latent, motion)
  where = pipeline.paths(args.workdir)
  head = talking_head.TalkingHead(where["latent"], where["motion"])
  report, _ = synthtalk_check.evaluate_runs(head, where["motion_data"], where["synthtalk"],
                                            seed=args.seed)
  report = {"configs": [args.latent_config, args.motion_config],
            "latent_steps": latent.total_steps, "motion_steps": motion.total_steps,
            "seconds": seconds, **report}
  with open(os.path.join(args.workdir, "motion_synthtalk.json"), "w", encoding="utf-8") as f:
    json.dump(report, f, indent=1)
  print(json.dumps({key: value for key, value in report.items() if key != "pixels_per_clip"},
                   indent=1))


if __name__ == "__main__":
  main()
