"""Tests for experiments/bench_realtime.py on the tiny configs (no timing thresholds)."""

import json

from tests import experiment_scripts


def test_tiny_benchmark_writes_positive_timings_and_flops(tmp_path, capsys):
  output = tmp_path / "bench.json"
  experiment_scripts.load("bench_realtime").main([
      "--tiny", "--repeats=1", "--warmup=0", "--steps=50,10", "--decode_batches=1,2",
      "--chunk_frames=5", "--stream_seconds=2.2", f"--output={output}"])
  report = json.loads(output.read_text())
  printed = capsys.readouterr().out
  assert "| steps | offline FPS" in printed
  assert report["configs"]["motion"] == "configs/motion.py:tiny"
  assert report["device"]["platform"] and report["device"]["device_kind"]
  assert report["shapes"]["chunk_frames"] == 5

  motion = report["motion"]["by_steps"]
  assert set(motion) == {"50", "10"}
  for timing in motion.values():
    assert timing["window_ms"] > 0 and timing["per_frame_ms"] > 0 and timing["compile_s"] > 0
    assert timing["flops_per_window"] > 0
  assert motion["50"]["flops_per_window"] > motion["10"]["flops_per_window"]
  assert report["motion"]["flops_per_step"] > 0 and report["motion"]["bytes_per_step"] > 0
  assert motion["50"]["bytes_per_window"] == 5 * motion["10"]["bytes_per_window"]

  for timing in report["decoder"]["by_batch"].values():
    assert timing["call_ms"] > 0 and timing["per_frame_ms"] > 0 and timing["flops_per_frame"] > 0
    assert timing["bytes_per_frame"] > 0
  audio = report["audio"]
  assert audio["block_forward_ms"] > 0 and audio["forward_seconds"] >= audio["segment_seconds"]
  assert audio["flops_per_second"] > 0 and audio["bytes_per_second"] > 0
  assert report["motion"]["parameters"] > 0 and audio["parameters"] > 0
  assert report["decoder"]["parameters_total"] > report["decoder"]["parameters_decode_path"] > 0

  for gpu in ("H100 SXM5", "RTX 4090"):
    assert report["gpus"][gpu]["source"]
    entry = report["roofline"][gpu]["50"]
    assert set(entry["functions"]) == {"motion window", "decoder", "Wav2Vec2"}
    assert entry["bounded_by"] in entry["functions"] and entry["fps_ceiling"] > 0
    # Half the bytes (bf16) cannot lower the ceiling.
    assert report["roofline_bf16_bytes"][gpu]["50"]["fps_ceiling"] >= entry["fps_ceiling"]
  assert "| GPU (roofline) |" in printed

  # End to end: the streamed motion is the offline motion; the first frame's latency has its
  # parts; the block features are compared with whole-clip ones.
  measured = report["measured"]
  assert len(measured["load_average_before"]) == 3
  for run in measured["by_steps"].values():
    assert run["frames"] == 55 and run["streamed_motion_equals_offline"]
    assert run["offline_fps"] > 0 and run["streaming_fps"] > 0
    assert run["offline_fps_cpu_time"] > 0 and run["streaming_fps_cpu_time"] > 0
    first = run["first_frame_compute_ms"]
    assert min(first["features"], first["motion"], first["decode"]) > 0
    assert abs(first["total"] - first["features"] - first["motion"] - first["decode"]) < 1e-6
    # The tiny window (25 frames = 1 s) and 0.1 s of look-ahead.
    assert abs(run["first_frame_audio_wait_ms"] - 1100.0) < 1.0
  difference = measured["feature_difference"]
  assert difference["frames"] == 55 and 0 < difference["relative_difference"]
  assert -1.0 <= difference["cosine_min"] <= difference["cosine_mean"] <= 1.0
  assert "Measured end to end" in printed

  pipeline = report["pipeline"]
  assert pipeline["50"]["flops_per_frame"] > pipeline["10"]["flops_per_frame"] > 0
  for figures in pipeline.values():
    for value in figures.values():
      assert value > 0


def test_cost_only_run_compiles_without_timings(tmp_path):
  output = tmp_path / "bench.json"
  experiment_scripts.load("bench_realtime").main([
      "--tiny", "--repeats=0", "--steps=2", "--skip_decoder", "--skip_audio",
      f"--output={output}"])
  report = json.loads(output.read_text())
  timing = report["motion"]["by_steps"]["2"]
  assert timing["window_ms"] is None and timing["per_frame_ms"] is None
  assert timing["flops_per_window"] > 0 and timing["bytes_per_window"] > 0
  assert report["pipeline"] == {}
  assert set(report["roofline"]["RTX 4090"]["2"]["functions"]) == {"motion window"}


def test_roofline_takes_the_larger_roof_and_names_the_bounding_function():
  bench = experiment_scripts.load("bench_realtime")
  gpu = {"bf16_tensor_flops": 100.0, "memory_bytes_per_s": 10.0}
  compute = bench.roofline_time(flops=50.0, num_bytes=1.0, gpu=gpu)  # 0.5 s vs 0.1 s
  assert compute["bound_by"] == "compute" and compute["ms"] == 500.0
  memory = bench.roofline_time(flops=50.0, num_bytes=20.0, gpu=gpu)  # 0.5 s vs 2 s
  assert memory["bound_by"] == "memory" and memory["ms"] == 2000.0
  assert memory["flops_per_byte"] == 2.5
  # Per frame on the H100: a motion window of W = 4 frames, a decoder batch of 2, 25 fps audio.
  h100 = bench.GPUS["H100 SXM5"]
  motion = {"by_steps": {10: {"flops_per_window": 4e12, "bytes_per_window": 4e6}}}
  decoder = {"by_batch": {1: {"flops_per_frame": 1.0, "bytes_per_frame": 1.0},
                          2: {"flops_per_frame": 1e9, "bytes_per_frame": 2 * 3.35e9}}}
  audio = {"flops_per_second": 25.0, "bytes_per_second": 25.0}
  entry = bench.roofline(motion, decoder, audio, window=4, fps=25.0)["H100 SXM5"][10]
  functions = entry["functions"]
  assert functions["motion window"]["bound_by"] == "compute"
  assert abs(functions["motion window"]["ms"] - 1000 * 1e12 / h100["bf16_tensor_flops"]) < 1e-9
  assert functions["decoder"]["bound_by"] == "memory"
  assert abs(functions["decoder"]["ms"] - 2.0) < 1e-9  # 2 x 3.35 GB at 3.35 TB/s
  assert entry["bounded_by"] == "decoder" and entry["bounded_by_roof"] == "memory"
  assert abs(entry["fps_ceiling"] - 1000 / entry["frame_ms"]) < 1e-9
  halved = bench.roofline(motion, decoder, audio, window=4, fps=25.0, bytes_scale=0.5)
  assert abs(halved["H100 SXM5"][10]["functions"]["decoder"]["ms"] - 1.0) < 1e-9
