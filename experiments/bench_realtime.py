r"""Real-time benchmark of the paper-size inference path (VASA-1 section 4, SPEC 1.4).

  python experiments/bench_realtime.py --output=bench_realtime.json [--repeats=3] [--warmup=1] \
      [--steps=50,10] [--decode_batches=1,8] [--chunk_frames=10] [--skip_decoder] \
      [--skip_audio] [--tiny]

Runs on whatever device JAX has (CPU, GPU) with RANDOMLY INITIALISED weights of the paper-size
models (no pretrained weights exist here; run time and FLOPs do not depend on the weight
values): the MotionDiT of configs/motion.py (paper: W=100, K=10, 8 layers x 512), the
FaceAutoencoder decoder of configs/latent.py (512: 512 x 512 frames) and a Wav2Vec2-base-sized
feature extractor (transformers.Wav2Vec2Config defaults). --tiny uses the tiny variants and a
tiny Wav2Vec2 instead (for tests).

Measured (median of --repeats calls after --warmup untimed calls; compilation timed apart):
  1. the sampler's compiled window function (`MotionSampler`: one guided window of W frames, a
     lax.scan over the denoising steps, one batched 3B network call per step) per step count;
  2. the decoder D(V_app, z_id, z_pose, z_dyn) -> uint8 frames, as `TalkingHead` runs it, per
     batch size;
  3. the Wav2Vec2 forward on one chunk of `config.audio.chunk_seconds` (the shape every feature
     call of the repo runs: shorter audio is zero-padded to it) and on the unpadded streaming
     segment (context + chunk + look-ahead of `vasa_jax.inference.streaming.StreamingFeatures`).
Derived: offline frames/s (motion + decode + features per frame); streaming with chunks of
--chunk_frames (default 10 frames = 0.4 s at 25 fps): first-frame latency (features of the first
chunk + one window call + decoding one frame) and sustained frames/s (each chunk costs one full
window call, one feature call and decoding its frames in batches of the largest batch size).
FLOPs come from XLA's cost analysis of the compiled functions; the frame rate they imply on an
RTX 4090 (165 dense bf16 TFLOP/s at 40% utilisation) is an ESTIMATE, not a measurement.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from typing import Any, Callable, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import transformers

# The repository root, for its configs/ folder (experiments run as scripts from anywhere).
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from configs import latent as latent_config_lib
from configs import motion as motion_config_lib
from vasa_jax.inference import streaming
from vasa_jax.inference import sampler as sampler_lib
from vasa_jax.diffusion import guidance
from vasa_jax.models import audio as audio_lib
from vasa_jax.models import autoencoder as autoencoder_lib
from vasa_jax.models import motion_dit

# RTX 4090 dense bf16 tensor throughput and the fraction of it a real pipeline is assumed to reach.
RTX4090_PEAK_FLOPS = 165e12
RTX4090_UTILISATION = 0.4
# A tiny Wav2Vec2 for --tiny: base's seven conv layers (one frame per 320 samples) made narrow.
TINY_WAV2VEC2 = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=64, conv_dim=(16,) * 7, num_conv_pos_embeddings=16,
                     num_conv_pos_embedding_groups=4)


# ----------------------------------------------------------------------------------------------
# Measuring one function.
# ----------------------------------------------------------------------------------------------
def xla_flops(compiled: Any) -> float:
  """FLOPs of a compiled function from XLA's cost analysis (a dict, or a list of dicts in some
  jax versions). A loop body (lax.scan / while) is counted ONCE, not once per iteration."""
  analysis = compiled.cost_analysis()
  if isinstance(analysis, (list, tuple)):
    analysis = analysis[0]
  return float(analysis.get("flops", 0.0))


def measure(jitted: Callable, args: Sequence[Any], repeats: int, warmup: int,
            name: str, static_kwargs: Optional[dict[str, Any]] = None) -> dict[str, float]:
  """Compiles `jitted` for `args` and its `static_kwargs` (timed), then runs it `warmup` times
  untimed and `repeats` times timed; prints a progress line with `name`.

  Returns compile_s, ms (median wall time of the timed calls) and flops (cost analysis).
  """
  lowered = jitted.lower(*args, **(static_kwargs or {}))
  start = time.perf_counter()
  compiled = lowered.compile()
  compile_s = time.perf_counter() - start
  for _ in range(warmup):
    jax.block_until_ready(compiled(*args))
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(compiled(*args))
    times.append(time.perf_counter() - start)
  result = {"compile_s": compile_s, "ms": 1000 * statistics.median(times),
            "flops": xla_flops(compiled)}
  print(f"  {name}: {result['ms']:.1f} ms per call (compile {compile_s:.1f} s)", flush=True)
  return result


def random_params(abstract_params: Any, seed: int) -> Any:
  """Random float32 parameters of the shapes of `abstract_params` (a jax.eval_shape tree).

  Kernels (and weight-norm directions) are normal with std 1/sqrt(fan-in), biases zero, norm
  scales and weight-norm gains one, anything else (embeddings, null tokens) normal with std 0.02.
  Drawn with numpy: nothing to compile, unlike a jitted `init` (tens of seconds on a CPU).
  """
  generator = np.random.default_rng(seed)

  def leaf(path, struct):
    name, shape = getattr(path[-1], "key", ""), struct.shape
    if name == "bias":
      return np.zeros(shape, np.float32)
    if name in ("scale", "weight_g"):
      return np.ones(shape, np.float32)
    std = 1.0 / np.sqrt(np.prod(shape[:-1])) if name in ("kernel", "weight_v") else 0.02
    return (std * generator.standard_normal(shape, np.float32)).astype(np.float32)

  return jax.device_put(jax.tree_util.tree_map_with_path(leaf, nn.meta.unbox(abstract_params)))


def parameter_total(params: Any) -> int:
  return sum(leaf.size for leaf in jax.tree.leaves(params))


def compiled_flops(jitted: Callable, args: Sequence[Any]) -> float:
  """Cost-analysis FLOPs of `jitted` for `args` (compiled, not run)."""
  return xla_flops(jitted.lower(*args).compile())


# ----------------------------------------------------------------------------------------------
# Components.
# ----------------------------------------------------------------------------------------------
def window_inputs(model: motion_dit.MotionDiT, rng: jax.Array) -> tuple[dict, dict]:
  """Normalised conditions and drop masks of one steady-state window (previous frames present,
  every control given, all W audio frames valid), as `MotionStream.push` builds them."""
  motion_rng, previous_audio_rng, audio_rng = jax.random.split(rng, 3)
  conditions = {
      "previous_motion": jax.random.normal(motion_rng, (1, model.num_previous, model.motion_dim)),
      "previous_audio": jax.random.normal(previous_audio_rng,
                                          (1, model.num_previous, model.audio_dim)),
      "audio": jax.random.normal(audio_rng, (1, model.window, model.audio_dim)),
      "gaze": jnp.zeros((1, 2)), "distance": jnp.zeros((1,)),
      "emotion": jnp.zeros((1, model.emotion_dim))}
  drops = {name: jnp.zeros((1,), bool)
           for name in ("drop_previous", "drop_gaze", "drop_distance", "drop_emotion")}
  drops["audio_valid"] = jnp.ones((1, model.window), bool)
  return conditions, drops


def bench_motion(config, steps_list: Sequence[int], repeats: int, warmup: int,
                 seed: int) -> dict[str, Any]:
  """Window-function timings and FLOPs per denoising step count, and the MotionDiT size."""
  model = motion_dit.MotionDiT.from_config(config.model)
  input_rng, noise_rng = jax.random.split(jax.random.key(seed, impl=config.get("prng_impl")))
  conditions, drops = window_inputs(model, input_rng)
  noisy_motion = jnp.zeros((1, model.window, model.motion_dim))
  timestep = jnp.zeros((1,), jnp.int32)
  params = random_params(motion_dit.abstract_variables(model)["params"], seed)
  # Unit statistics: the benchmark's inputs are already normalised.
  unit_statistics = {name: {"mean": np.zeros(shape), "std": np.ones(shape)}
                     for name, shape in sampler_lib.statistics_shapes(config.model).items()}
  lambdas = (jnp.float32(config.sampling.lambda_audio), jnp.float32(config.sampling.lambda_gaze))

  # FLOPs of one denoising step: the guided X^0 from one batched 3B call, with the layers
  # unrolled (cost analysis counts an nn.scan over layers once), compiled for abstract params.
  unrolled_config = config.model.copy_and_resolve_references()
  unrolled_config.scan = False
  unrolled_model = motion_dit.MotionDiT.from_config(unrolled_config)

  def guided_denoise(params, noisy_motion, timestep, conditions, drops):
    denoise_fn = guidance.with_guidance(
        motion_dit.make_denoise_fn(unrolled_model, {"params": params}), *lambdas)
    return denoise_fn(noisy_motion, timestep, conditions, drops)

  flops_per_step = compiled_flops(
      jax.jit(guided_denoise),
      (nn.meta.unbox(motion_dit.abstract_variables(unrolled_model)["params"]), noisy_motion,
       timestep, conditions, drops))
  results = {"parameters": parameter_total(params),
             "flops_per_step": flops_per_step, "by_steps": {}}
  for steps in steps_list:
    sampler = sampler_lib.MotionSampler(config, params, unit_statistics, num_steps=steps)
    # The sampler's own jitted window function: what `sample_window` and `MotionStream.push` call.
    timing = measure(sampler._window_fn,  # pylint: disable=protected-access
                     (sampler.params, conditions, drops, noise_rng, *lambdas), repeats, warmup,
                     f"motion window, {steps} steps", static_kwargs={"num_steps": steps})
    results["by_steps"][steps] = {
        "window_ms": timing["ms"], "per_frame_ms": timing["ms"] / model.window,
        "compile_s": timing["compile_s"],
        # Cost analysis counts a scan body once (steps, and layers when scanned): the raw figure
        # undercounts, the window's FLOPs are per step x steps.
        "flops_per_window": flops_per_step * steps,
        "flops_per_window_xla_raw": timing["flops"]}
  return results


def bench_decoder(config, batch_sizes: Sequence[int], repeats: int, warmup: int,
                  seed: int) -> dict[str, Any]:
  """Decoder timings and FLOPs per batch size, and the autoencoder's parameter counts."""
  model_config = config.model
  model = autoencoder_lib.FaceAutoencoder.from_config(model_config)
  depth, height, width = autoencoder_lib.volume_shape(model_config)
  volume_rng, identity_rng, motion_rng = jax.random.split(jax.random.key(seed), 3)
  volume = jax.random.normal(volume_rng, (1, depth, height, width, model_config.volume_channels))
  z_id = jax.random.normal(identity_rng, (1, model_config.identity_dim))
  motion_dim = motion_config_lib.POSE_DIM + model_config.dyn_dim

  def split_motion(motion):  # [B, M] -> (z_pose [B, 7], z_dyn [B, dyn_dim])
    return motion[:, :motion_config_lib.POSE_DIM], motion[:, motion_config_lib.POSE_DIM:]

  # Only the decode path's parameters (canonical->driver warping generator and G2D).
  params = random_params(jax.eval_shape(
      lambda rng: model.init(rng, volume, z_id, *split_motion(jnp.zeros((1, motion_dim))),
                             method="decode"), jax.random.key(0))["params"], seed)

  def decode(params, volume, z_id, motion):  # as `TalkingHead`: motion [B, M] -> uint8 frames
    batch = motion.shape[0]
    images = model.apply(
        {"params": params}, jnp.broadcast_to(volume, (batch,) + volume.shape[1:]),
        jnp.broadcast_to(z_id, (batch,) + z_id.shape[1:]), *split_motion(motion),
        method="decode")  # [B, S, S, 3] in [-1, 1]
    return jnp.clip(jnp.round((images + 1.0) * 127.5), 0, 255).astype(jnp.uint8)

  counts = autoencoder_lib.parameter_counts(
      autoencoder_lib.abstract_variables(model_config)["params"])
  results = {"parameters_total": counts["total"],
             "parameters_decode_path": parameter_total(params),
             "image_size": model_config.image_size, "by_batch": {}}
  for batch in batch_sizes:
    motion = 0.1 * jax.random.normal(jax.random.fold_in(motion_rng, batch), (batch, motion_dim))
    timing = measure(jax.jit(decode), (params, volume, z_id, motion), repeats, warmup,
                     f"decode, batch {batch}")
    results["by_batch"][batch] = {
        "call_ms": timing["ms"], "per_frame_ms": timing["ms"] / batch,
        "compile_s": timing["compile_s"], "flops_per_frame": timing["flops"] / batch}
  return results


def bench_audio(wav2vec2_config: transformers.Wav2Vec2Config, chunk_seconds: float,
                segment_seconds: float, repeats: int, warmup: int, seed: int) -> dict[str, Any]:
  """Wav2Vec2 forward timings and FLOPs on one feature chunk and on a streaming segment."""
  stride = audio_lib.frame_stride(wav2vec2_config)
  chunk_samples = max(1, round(chunk_seconds * audio_lib.SAMPLE_RATE / stride)) * stride
  segment_samples = round(segment_seconds * audio_lib.SAMPLE_RATE)
  audio_rng = jax.random.key(seed)
  module = audio_lib.Wav2Vec2Model(wav2vec2_config)
  params = random_params(jax.eval_shape(
      module.init, jax.random.key(0), jax.ShapeDtypeStruct((1, chunk_samples), jnp.float32))[
          "params"], seed)
  bundle = audio_lib.wav2vec2_bundle(wav2vec2_config, params)

  def forward_args(num_samples):
    waveform = jax.random.normal(jax.random.fold_in(audio_rng, num_samples), (1, num_samples))
    return (bundle.params, waveform, jnp.array([num_samples], jnp.int32))

  chunk = measure(bundle.forward, forward_args(chunk_samples), repeats, warmup,
                  f"Wav2Vec2, {chunk_samples} samples")
  segment = measure(bundle.forward, forward_args(segment_samples), repeats, warmup,
                    f"Wav2Vec2, {segment_samples} samples")
  seconds = chunk_samples / audio_lib.SAMPLE_RATE
  return {"parameters": parameter_total(params),
          "chunk_seconds": seconds, "chunk_forward_ms": chunk["ms"],
          "chunk_compile_s": chunk["compile_s"], "ms_per_second": chunk["ms"] / seconds,
          "flops_per_second": chunk["flops"] / seconds,
          "stream_segment_seconds": segment_samples / audio_lib.SAMPLE_RATE,
          "stream_segment_forward_ms": segment["ms"]}


# ----------------------------------------------------------------------------------------------
# Pipeline figures.
# ----------------------------------------------------------------------------------------------
def pipeline_figures(motion: dict, decoder: Optional[dict], audio: Optional[dict], window: int,
                     fps: float, chunk_frames: int) -> dict[int, dict[str, Optional[float]]]:
  """Offline and streaming figures per step count from the component measurements (decode and
  features count as zero when skipped; the report's notes say so)."""
  decode_batch_1 = decode_large = {"call_ms": 0.0, "per_frame_ms": 0.0, "flops_per_frame": 0.0}
  if decoder:
    batches = decoder["by_batch"]
    decode_batch_1, decode_large = batches[min(batches)], batches[max(batches)]
  audio_ms_per_frame = audio["ms_per_second"] / fps if audio else 0.0
  audio_flops_per_frame = audio["flops_per_second"] / fps if audio else 0.0
  # The repo's streaming feature call runs one chunk-shaped (zero-padded) forward per chunk.
  feature_call_ms = audio["chunk_forward_ms"] if audio else 0.0
  figures = {}
  for steps, timing in motion["by_steps"].items():
    offline_ms = timing["per_frame_ms"] + decode_large["per_frame_ms"] + audio_ms_per_frame
    chunk_ms = timing["window_ms"] + feature_call_ms + chunk_frames * decode_large["per_frame_ms"]
    flops_per_frame = (timing["flops_per_window"] / window + decode_batch_1["flops_per_frame"]
                       + audio_flops_per_frame)
    figures[steps] = {
        "offline_ms_per_frame": offline_ms, "offline_fps": 1000 / offline_ms,
        "first_frame_latency_ms": feature_call_ms + timing["window_ms"]
                                  + decode_batch_1["call_ms"],
        "streaming_fps": 1000 * chunk_frames / chunk_ms,
        "flops_per_frame": flops_per_frame,
        "rtx4090_estimated_fps": RTX4090_PEAK_FLOPS * RTX4090_UTILISATION / flops_per_frame}
  return figures


def markdown_tables(report: dict) -> str:
  """The report as two markdown tables: components, then pipeline figures per step count."""
  lines = ["| component | time per call (ms) | per frame (ms) | compile (s) | GFLOP per frame |",
           "|---|---:|---:|---:|---:|"]
  window = report["shapes"]["window"]
  for steps, timing in report["motion"]["by_steps"].items():
    lines.append(f"| motion window W={window}, {steps} steps (guided 3B batch) | "
                 f"{timing['window_ms']:.1f} | {timing['per_frame_ms']:.2f} | "
                 f"{timing['compile_s']:.1f} | {timing['flops_per_window'] / window / 1e9:.2f} |")
  if report["decoder"]:
    size = report["decoder"]["image_size"]
    for batch, timing in report["decoder"]["by_batch"].items():
      lines.append(f"| decode {size}x{size}, batch {batch} | {timing['call_ms']:.1f} | "
                   f"{timing['per_frame_ms']:.2f} | {timing['compile_s']:.1f} | "
                   f"{timing['flops_per_frame'] / 1e9:.2f} |")
  if report["audio"]:
    audio, fps = report["audio"], report["shapes"]["fps"]
    lines.append(f"| {report['configs']['audio'].split(':')[0]}, {audio['chunk_seconds']:g} s "
                 f"chunk | {audio['chunk_forward_ms']:.1f} | "
                 f"{audio['ms_per_second'] / fps:.2f} | {audio['chunk_compile_s']:.1f} | "
                 f"{audio['flops_per_second'] / fps / 1e9:.2f} |")
    lines.append(f"| same, unpadded {audio['stream_segment_seconds']:g} s stream segment | "
                 f"{audio['stream_segment_forward_ms']:.1f} | | | |")
  chunk_frames = report["shapes"]["chunk_frames"]
  lines += ["", f"| steps | offline FPS | stream first-frame latency (ms) | stream FPS (chunk "
            f"{chunk_frames} frames = {chunk_frames / report['shapes']['fps']:g} s) | "
            f"GFLOP per frame | RTX 4090 FPS (estimate) |", "|---:|---:|---:|---:|---:|---:|"]
  for steps, figures in report["pipeline"].items():
    lines.append(f"| {steps} | {figures['offline_fps']:.2f} | "
                 f"{figures['first_frame_latency_ms']:.1f} | {figures['streaming_fps']:.2f} | "
                 f"{figures['flops_per_frame'] / 1e9:.2f} | "
                 f"{figures['rtx4090_estimated_fps']:.0f} |")
  return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# Command line.
# ----------------------------------------------------------------------------------------------
def _ints(text: str) -> list[int]:
  return [int(value) for value in text.split(",") if value.strip()]


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--output", default="bench_realtime.json", help="JSON report to write")
  parser.add_argument("--repeats", type=int, default=3, help="timed calls per measurement")
  parser.add_argument("--warmup", type=int, default=1,
                      help="untimed calls before the timed ones (0 saves time on a CPU)")
  parser.add_argument("--steps", type=_ints, default=[50, 10], help="denoising step counts")
  parser.add_argument("--decode_batches", type=_ints, default=[1, 8],
                      help="decoder batch sizes (the smallest: first-frame latency; the largest: "
                           "throughput)")
  parser.add_argument("--chunk_frames", type=int, default=10,
                      help="streaming chunk in video frames (10 = 0.4 s at 25 fps)")
  parser.add_argument("--skip_decoder", action="store_true", help="leave out the decoder")
  parser.add_argument("--skip_audio", action="store_true", help="leave out the Wav2Vec2 features")
  parser.add_argument("--tiny", action="store_true",
                      help="tiny configs and a tiny Wav2Vec2 (for tests), not the paper sizes")
  parser.add_argument("--seed", type=int, default=0, help="seed of the random weights and inputs")
  return parser


def main(argv: Optional[Sequence[str]] = None) -> dict[str, Any]:
  args = _parser().parse_args(argv)
  motion_variant, latent_variant = ("tiny", "tiny") if args.tiny else ("paper", "512")
  motion_config = motion_config_lib.get_config(motion_variant)
  latent_config = latent_config_lib.get_config(latent_variant)
  window, fps = motion_config.model.window, motion_config.fps
  if args.repeats < 1 or args.warmup < 0 or not args.steps or not args.decode_batches:
    raise SystemExit("--repeats, --steps and --decode_batches need at least one value, "
                     "--warmup a count >= 0")
  if not 1 <= args.chunk_frames <= window:
    raise SystemExit(f"--chunk_frames must be in [1, W = {window}], got {args.chunk_frames}")
  device = jax.devices()[0]
  print(f"device: {device.platform} ({device.device_kind}), jax {jax.__version__}; "
        "randomly initialised weights", flush=True)

  motion = bench_motion(motion_config, args.steps, args.repeats, args.warmup, args.seed)
  decoder = None
  if not args.skip_decoder:
    decoder = bench_decoder(latent_config, sorted(set(args.decode_batches)), args.repeats,
                            args.warmup, args.seed)
  audio = None
  if not args.skip_audio:
    wav2vec2_config = transformers.Wav2Vec2Config(**(TINY_WAV2VEC2 if args.tiny else {}))
    segment_seconds = (streaming.STREAM_CONTEXT_SECONDS["wav2vec2"] + args.chunk_frames / fps
                       + streaming.STREAM_LOOKAHEAD_SECONDS["wav2vec2"])
    audio = bench_audio(wav2vec2_config, motion_config.audio.chunk_seconds, segment_seconds,
                        args.repeats, args.warmup, args.seed)

  notes = [
      "Weights are RANDOMLY INITIALISED (no pretrained weights exist here); run time and FLOPs "
      "do not depend on weight values.",
      f"Times: median of {args.repeats} timed call(s) after {args.warmup} untimed warm-up "
      "call(s), compilation excluded (compile_s apart). Offline and streaming figures are "
      "computed from the component times.",
      "XLA's cost analysis counts a lax.scan body ONCE (checked: the window function's figure is "
      "the same at every step count), so flops_per_window = flops_per_step x steps, with "
      "flops_per_step from one compiled guided denoise call (the batched 3B network call) of the "
      "MotionDiT with its layers unrolled (the paper config scans them, which cost analysis would "
      "also count once). flops_per_window_xla_raw is the raw cost analysis of the whole window "
      "function (one step, one layer), kept for reference. Gathers (trilinear warps) and "
      "elementwise work count little in XLA's FLOPs.",
      "Offline per frame: window time / W + decode per frame at the largest batch + Wav2Vec2 "
      "per second / fps (the repo's offline extraction overlaps 10 s chunks by a fifth, 25% more "
      "for long clips; not included).",
      f"Streaming, chunks of {args.chunk_frames} frames ({args.chunk_frames / fps:g} s): every "
      "chunk costs one full W-frame window call, one feature call and the decode of its frames "
      "(largest batch's per-frame time). The repo's feature calls zero-pad every segment to "
      "config.audio.chunk_seconds, so a feature call costs one chunk-sized forward; "
      "stream_segment_forward_ms is the forward on the unpadded segment, for comparison. "
      "First-frame latency = that feature call + one window call + decoding one frame at the "
      "smallest batch.",
      f"RTX 4090 frame rates are ESTIMATES: {RTX4090_PEAK_FLOPS / 1e12:g} dense bf16 TFLOP/s x "
      f"{RTX4090_UTILISATION:.0%} utilisation / FLOPs per frame (motion at the step count + "
      "decode of one frame + Wav2Vec2 per frame).",
  ]
  if args.skip_decoder or args.skip_audio:
    skipped = [name for name, flag in (("decoder", args.skip_decoder),
                                       ("audio features", args.skip_audio)) if flag]
    notes.append(f"Skipped: {', '.join(skipped)}; the pipeline figures count them as zero.")
  report = {
      "device": {"platform": device.platform, "device_kind": device.device_kind,
                 "num_devices": jax.device_count(), "jax_version": jax.__version__},
      "weights": "random initialisation (no pretrained weights)",
      "configs": {"motion": f"configs/motion.py:{motion_variant}",
                  "latent": f"configs/latent.py:{latent_variant}",
                  "audio": ("tiny Wav2Vec2" if args.tiny else "wav2vec2-base") +
                           ": transformers.Wav2Vec2Config defaults" +
                           (" + TINY_WAV2VEC2" if args.tiny else "")},
      "shapes": {"window": window, "num_previous": motion_config.model.num_previous, "fps": fps,
                 "chunk_frames": args.chunk_frames, "chunk_seconds": args.chunk_frames / fps},
      "motion": motion, "decoder": decoder, "audio": audio,
      "pipeline": pipeline_figures(motion, decoder, audio, window, fps, args.chunk_frames),
      "rtx4090_estimate": {"peak_flops": RTX4090_PEAK_FLOPS, "utilisation": RTX4090_UTILISATION},
      "notes": notes,
  }
  print(markdown_tables(report))
  with open(args.output, "w", encoding="utf-8") as f:
    json.dump(report, f, indent=1)
  print(f"wrote {args.output}")
  return report


if __name__ == "__main__":
  main()
