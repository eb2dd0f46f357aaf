"""metrics.json beside a run's checkpoints, and the undertrained-checkpoint rules."""

import json
import os

from vasa_jax.training import run_metrics


def write_metrics(workdir, total_steps=1000, latest=None, history=None, main="loss"):
  with open(os.path.join(workdir, run_metrics.METRICS_NAME), "w", encoding="utf-8") as f:
    json.dump({"total_steps": total_steps, "main_metric": main, "latest": latest or {},
               "history": history or {}}, f)


def test_record_keeps_latest_values_and_a_thinned_history_and_forgets_unsaved_steps(tmp_path):
  record = run_metrics.MetricsRecord(str(tmp_path), 2000, ("loss",), start_step=0)
  for step in range(1, 301):
    record.add(step, {"loss": 1.0 / step, "grad_norm": 2.0})
  record.add(300, {"eval/psnr_self": 20.0})
  record.write()
  saved = run_metrics.read(str(tmp_path))
  assert saved["total_steps"] == 2000 and saved["main_metric"] == "loss"
  assert saved["latest"]["loss"] == [300, 1.0 / 300] and saved["latest"]["eval/psnr_self"] == [
      300, 20.0]
  steps = [step for step, _ in saved["history"]["loss"]]
  assert len(steps) <= run_metrics.MAX_HISTORY and steps[0] == 1 and steps[-1] == 300
  assert "grad_norm" not in saved["history"]
  # A run resumed from step 200 (its newest checkpoint) forgets what was logged after it.
  resumed = run_metrics.MetricsRecord(str(tmp_path), 2000, ("loss",), start_step=200)
  assert max(step for step, _ in resumed.history["loss"]) <= 200
  assert "eval/psnr_self" not in resumed.latest and "loss" not in resumed.latest


def test_held_out_metric_no_better_than_its_baseline_is_undertrained(tmp_path):
  workdir = str(tmp_path)
  assert not run_metrics.undertrained_reasons(workdir, 100)  # no metrics.json: no opinion
  write_metrics(workdir, latest={"eval/psnr_self": [500, 9.2],
                                 "eval/psnr_mean_colour": [500, 16.1]})
  (reason,) = run_metrics.undertrained_reasons(workdir, 500)
  assert "self-reconstruction PSNR 9.2 dB is less than 3 dB above the 16.1 dB" in reason
  write_metrics(workdir, latest={"eval/psnr_self": [500, 18.9],
                                 "eval/psnr_mean_colour": [500, 16.1]})
  assert len(run_metrics.undertrained_reasons(workdir, 500)) == 1  # 2.8 dB above: blobs
  write_metrics(workdir, latest={"eval/psnr_self": [500, 22.9],
                                 "eval/psnr_mean_colour": [500, 16.1]})
  assert not run_metrics.undertrained_reasons(workdir, 500)
  write_metrics(workdir, latest={"eval/x0_loss": [500, 1.01],
                                 "eval/x0_loss_of_the_mean": [500, 0.98]})
  (reason,) = run_metrics.undertrained_reasons(workdir, 500)
  assert "x0 loss 1.010 is not below the 0.980 of predicting the mean" in reason
  write_metrics(workdir, latest={"eval/x0_loss": [500, 0.3],
                                 "eval/x0_loss_of_the_mean": [500, 0.98]})
  assert not run_metrics.undertrained_reasons(workdir, 500)


def test_early_stop_with_the_main_loss_still_falling_is_undertrained(tmp_path):
  workdir = str(tmp_path)
  falling = [[step, 10.0 / step] for step in range(10, 410, 10)]
  flat = [[step, 1.0 + 0.01 * (step % 20 == 0)] for step in range(10, 410, 10)]
  write_metrics(workdir, total_steps=2000, history={"loss": falling})
  (reason,) = run_metrics.undertrained_reasons(workdir, 400)
  assert reason.startswith("it stopped at step 400 of 2000 with loss still falling")
  assert not run_metrics.undertrained_reasons(workdir, 1200)  # past half of total_steps
  write_metrics(workdir, total_steps=2000, history={"loss": flat})
  assert not run_metrics.undertrained_reasons(workdir, 400)  # the loss has settled
  write_metrics(workdir, total_steps=2000, history={"loss": falling[:8]})
  assert not run_metrics.undertrained_reasons(workdir, 80)  # too few points to tell
