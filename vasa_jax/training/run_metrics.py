"""A run's latest metrics beside its checkpoints, and what they say about how trained it is.

The training loop (process 0) rewrites `<workdir>/metrics.json` after every logged interval and
every evaluation:

  {"total_steps": int,                          the config's total_steps
   "main_metric": str,                          the stage's main training loss
   "latest": {name: [step, value]},             newest value of every scalar (training, eval/)
   "history": {name: [[step, value], ...]}}     the stage's progress metrics at every log step,
                                                thinned to at most MAX_HISTORY points

(TensorBoard event files hold everything; this file is what inference reads without TensorFlow.)

`undertrained_reasons` turns it into the warnings `vasa_jax.sample` prints. A checkpoint is
clearly undertrained when
  * a held-out metric of its EMA weights is not clearly better than a trivial predictor's,
    which the stage's evaluator logs beside it (`BASELINES`): stage 1's self-reconstruction
    PSNR less than 3 dB above the PSNR of each face's flat mean colour (on SynthTalk at 64 px an
    untrained tiny model scores ~9 dB, the mean colour 14-16 dB, 300 steps of the tiny config
    +0.8 dB over it with faces still colour blobs, trained models 22-23 dB, +6-7 dB); stage 2's
    x0 loss not below that of predicting the training mean; or
  * it stopped before EARLY_FRACTION of its total_steps while its main loss was still falling:
    the last fifth of the logged history averages more than FALLING_FRACTION below the fifth
    before it.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any, Mapping, Optional, Sequence

METRICS_NAME = "metrics.json"
# Most history points kept per metric; past it every second point is dropped.
MAX_HISTORY = 256
# (metric, the evaluator's trivial baseline beside it, the margin by which a trained model beats
# it (higher metrics must exceed baseline + margin, lower ones stay below baseline - margin),
# True when higher is better, description).
BASELINES = (
    ("eval/psnr_self", "eval/psnr_mean_colour", 3.0, True,
     "held-out self-reconstruction PSNR {value:.1f} dB is less than 3 dB above the "
     "{baseline:.1f} dB of each face's flat mean colour"),
    ("eval/x0_loss", "eval/x0_loss_of_the_mean", 0.0, False,
     "held-out x0 loss {value:.3f} is not below the {baseline:.3f} of predicting the mean "
     "motion"),
)
EARLY_FRACTION = 0.5
FALLING_FRACTION = 0.05


class MetricsRecord:
  """`<workdir>/metrics.json` of a run in progress; `add` scalars, then `write`."""

  def __init__(self, workdir: str, total_steps: int, progress_metrics: Sequence[str],
               start_step: int):
    self.path = os.path.join(workdir, METRICS_NAME)
    self.progress_metrics = tuple(progress_metrics)
    previous = read(workdir) or {}
    # A run resumed from an earlier checkpoint than its last log forgets the steps after it.
    self.latest = {name: entry for name, entry in previous.get("latest", {}).items()
                   if entry[0] <= start_step}
    self.history = {name: [point for point in points if point[0] <= start_step]
                    for name, points in previous.get("history", {}).items()}
    self.total_steps = int(total_steps)

  def add(self, step: int, scalars: Mapping[str, float]) -> None:
    for name, value in scalars.items():
      self.latest[name] = [int(step), float(value)]
      if name in self.progress_metrics:
        points = self.history.setdefault(name, [])
        points.append([int(step), float(value)])
        if len(points) > MAX_HISTORY:
          self.history[name] = points[::2]

  def write(self) -> None:
    content = {"total_steps": self.total_steps,
               "main_metric": self.progress_metrics[0] if self.progress_metrics else None,
               "latest": self.latest, "history": self.history}
    with open(self.path + ".tmp", "w", encoding="utf-8") as f:
      json.dump(content, f)
    os.replace(self.path + ".tmp", self.path)


def read(workdir: str) -> Optional[dict[str, Any]]:
  """The run's metrics.json, or None when it has none or it is unreadable."""
  try:
    with open(os.path.join(workdir, METRICS_NAME), encoding="utf-8") as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


def still_falling(points: Sequence[Sequence[float]]) -> Optional[tuple[float, float]]:
  """(earlier mean, recent mean) of the last two fifths of a loss history when the recent one
  is more than FALLING_FRACTION lower; None otherwise or with fewer than 10 points."""
  values = [value for _, value in points if math.isfinite(value)]
  fifth = len(values) // 5
  if fifth < 2:
    return None
  earlier = sum(values[-2 * fifth:-fifth]) / fifth
  recent = sum(values[-fifth:]) / fifth
  if recent < earlier - FALLING_FRACTION * abs(earlier):
    return earlier, recent
  return None


def undertrained_reasons(workdir: str, step: int) -> list[str]:
  """Why the checkpoint of `workdir` at `step` is clearly undertrained (empty: it is not, or the
  run recorded no metrics.json)."""
  metrics = read(workdir)
  if not metrics:
    return []
  reasons = []
  latest = metrics.get("latest", {})
  for name, baseline_name, margin, higher_is_better, description in BASELINES:
    if name in latest and baseline_name in latest:
      value, baseline = latest[name][1], latest[baseline_name][1]
      if math.isfinite(value) and math.isfinite(baseline) and (
          value < baseline + margin if higher_is_better else value >= baseline - margin):
        reasons.append(description.format(value=value, baseline=baseline) +
                       f" (eval at step {latest[name][0]})")
  total_steps = metrics.get("total_steps") or 0
  main = metrics.get("main_metric")
  falling = still_falling(metrics.get("history", {}).get(main, [])) if main else None
  if step < EARLY_FRACTION * total_steps and falling:
    reasons.append(f"it stopped at step {step} of {total_steps} with {main} still falling "
                   f"({falling[0]:.4g} -> {falling[1]:.4g} over the last logged steps)")
  return reasons
