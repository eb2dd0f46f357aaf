"""Tests for experiments/bench_realtime.py on the tiny configs (no timing thresholds)."""

import json

from tests import experiment_scripts


def test_tiny_benchmark_writes_positive_timings_and_flops(tmp_path, capsys):
  output = tmp_path / "bench.json"
  experiment_scripts.load("bench_realtime").main([
      "--tiny", "--repeats=1", "--warmup=0", "--steps=50,10", "--decode_batches=1,2",
      "--chunk_frames=5", f"--output={output}"])
  report = json.loads(output.read_text())
  assert "| steps | offline FPS" in capsys.readouterr().out
  assert report["configs"]["motion"] == "configs/motion.py:tiny"
  assert report["device"]["platform"] and report["device"]["device_kind"]
  assert report["shapes"]["chunk_frames"] == 5

  motion = report["motion"]["by_steps"]
  assert set(motion) == {"50", "10"}
  for timing in motion.values():
    assert timing["window_ms"] > 0 and timing["per_frame_ms"] > 0 and timing["compile_s"] > 0
    assert timing["flops_per_window"] > 0
  assert motion["50"]["flops_per_window"] > motion["10"]["flops_per_window"]
  assert report["motion"]["flops_per_step"] > 0

  for timing in report["decoder"]["by_batch"].values():
    assert timing["call_ms"] > 0 and timing["per_frame_ms"] > 0 and timing["flops_per_frame"] > 0
  audio = report["audio"]
  assert audio["chunk_forward_ms"] > 0 and audio["stream_segment_forward_ms"] > 0
  assert audio["flops_per_second"] > 0
  assert report["motion"]["parameters"] > 0 and audio["parameters"] > 0
  assert report["decoder"]["parameters_total"] > report["decoder"]["parameters_decode_path"] > 0

  pipeline = report["pipeline"]
  assert pipeline["50"]["flops_per_frame"] > pipeline["10"]["flops_per_frame"] > 0
  for figures in pipeline.values():
    for value in figures.values():
      assert value > 0
