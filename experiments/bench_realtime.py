r"""Real-time benchmark of the paper-size inference path (VASA-1 section 4, SPEC 1.4).

  python experiments/bench_realtime.py --output=bench_realtime.json [--repeats=3] [--warmup=1] \
      [--steps=50,10] [--decode_batches=1,8] [--stream_seconds=0 [--chunk_frames=10]] \
      [--skip_decoder] [--skip_audio] [--tiny]

Runs on whatever device JAX has (CPU, GPU) with RANDOMLY INITIALISED weights of the paper-size
models (no pretrained weights exist here; run time and FLOPs do not depend on the weight
values): the MotionDiT of configs/motion.py (paper: W=100, K=10, 8 layers x 512), the
FaceAutoencoder decoder of configs/latent.py (512: 512 x 512 frames) and a Wav2Vec2-base-sized
feature extractor (transformers.Wav2Vec2Config defaults). --tiny uses the tiny variants and a
tiny Wav2Vec2 instead (for tests and CPU runs). --repeats=0 compiles every function for its cost
analysis and the roofline but runs none (no timings, no CPU frame rates).

Measured (median of --repeats calls after --warmup untimed calls; compilation timed apart):
  1. the sampler's compiled window function (`MotionSampler`: one guided window of W frames, a
     lax.scan over the denoising steps, one batched 3B network call per step) per step count;
  2. the decoder D(V_app, z_id, z_pose, z_dyn) -> uint8 frames, as `TalkingHead` runs it, per
     batch size;
  3. the Wav2Vec2 forward on one feature block of `config.audio.chunk_seconds` as the repo runs
     it (`speech_features.wav2vec2_featurizer`: the block, 2 s of context and 0.1 s of
     look-ahead, zero-padded to whole seconds).
Derived: frames/s (motion + decode + features per frame; offline and streaming do the same work
per frame) and the first-frame compute latency (the first window's feature blocks + one window
call + one decoder call).
End to end (--stream_seconds > 0; `measure_pipeline`): offline and streaming on the same audio
with the repo's own objects, timed whole: streaming and offline frames/s, whether the streamed
motion equals the offline motion, the first frame's latency split into features, motion and
decode (and the audio a live stream waits for), the machine's load average, and how far the
block features are from whole-clip features.
FLOPs and bytes accessed come from XLA's cost analysis of the compiled functions. The GPU
projection is a ROOFLINE per compiled function (`roofline`): its time per frame is at least
max(FLOPs / peak FLOP/s, bytes / peak memory bandwidth) on the H100 (SXM5) and the RTX 4090
(`GPUS`: the vendors' published peaks, sources there), the frame rate at most one over the sum of
the three functions' times; the report says which function, and which roof (compute or memory),
bounds it. It is a ceiling computed from this machine's compiled programs, not a measurement.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from typing import Any, Callable, Mapping, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import transformers

# The repository root, for its configs/ folder (experiments run as scripts from anywhere).
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from configs import latent as latent_config_lib
from configs import motion as motion_config_lib
from vasa_jax.data import speech_features
from vasa_jax.inference import streaming
from vasa_jax.inference import talking_head
from vasa_jax.inference import sampler as sampler_lib
from vasa_jax.diffusion import guidance
from vasa_jax.models import audio as audio_lib
from vasa_jax.models import autoencoder as autoencoder_lib
from vasa_jax.models import motion_dit

# Published peaks of the GPUs the projection is made for: dense (no sparsity) BF16 tensor-core
# FLOP/s with FP32 accumulation, FP32 FLOP/s on the CUDA cores (for reference) and DRAM bandwidth.
GPUS = {
    "H100 SXM5": {
        "bf16_tensor_flops": 989.4e12, "fp32_flops": 66.9e12, "memory_bytes_per_s": 3.35e12,
        "source": "NVIDIA H100 Tensor Core GPU datasheet (H100 SXM: BF16 Tensor Core 1,979 "
                  "TFLOPS with sparsity, i.e. 989.4 dense; FP32 67 TFLOPS; HBM3 3.35 TB/s)"},
    "RTX 4090": {
        "bf16_tensor_flops": 165.2e12, "fp32_flops": 82.6e12, "memory_bytes_per_s": 1.008e12,
        "source": "NVIDIA Ada Lovelace GPU architecture whitepaper, appendix A (GeForce RTX "
                  "4090: peak BF16 Tensor TFLOPS with FP32 accumulate 165.2 dense, 330.3 sparse; "
                  "FP32 82.6 TFLOPS; 1,008 GB/s GDDR6X)"},
}
# The three compiled functions of a frame, as the roofline names them.
ROOFLINE_FUNCTIONS = ("motion window", "decoder", "Wav2Vec2")
# A tiny Wav2Vec2 for --tiny: base's seven conv layers (one frame per 320 samples) made narrow.
TINY_WAV2VEC2 = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=64, conv_dim=(16,) * 7, num_conv_pos_embeddings=16,
                     num_conv_pos_embedding_groups=4)


# ----------------------------------------------------------------------------------------------
# Measuring one function.
# ----------------------------------------------------------------------------------------------
def xla_cost(compiled: Any) -> dict[str, float]:
  """{"flops", "bytes"} of a compiled function from XLA's cost analysis (a dict, or a list of
  dicts in some jax versions): FLOPs, and bytes read and written by its (fused) operations. A
  loop body (lax.scan / while) is counted ONCE, not once per iteration."""
  analysis = compiled.cost_analysis()
  if isinstance(analysis, (list, tuple)):
    analysis = analysis[0]
  return {"flops": float(analysis.get("flops", 0.0)),
          "bytes": float(analysis.get("bytes accessed", 0.0))}


def measure(jitted: Callable, args: Sequence[Any], repeats: int, warmup: int,
            name: str, static_kwargs: Optional[dict[str, Any]] = None) -> dict[str, float]:
  """Compiles `jitted` for `args` and its `static_kwargs` (timed), then runs it `warmup` times
  untimed and `repeats` times timed; prints a progress line with `name`.

  Returns compile_s, ms (median wall time of the timed calls; None with `repeats` 0: compiled
  for the cost analysis only, never run), flops and bytes (`xla_cost`).
  """
  lowered = jitted.lower(*args, **(static_kwargs or {}))
  start = time.perf_counter()
  compiled = lowered.compile()
  compile_s = time.perf_counter() - start
  times = []
  for _ in range(warmup if repeats else 0):
    jax.block_until_ready(compiled(*args))
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(compiled(*args))
    times.append(time.perf_counter() - start)
  result = {"compile_s": compile_s, "ms": 1000 * statistics.median(times) if times else None,
            **xla_cost(compiled)}
  timed = f"{result['ms']:.1f} ms per call" if times else "not run"
  print(f"  {name}: {timed} (compile {compile_s:.1f} s)", flush=True)
  return result


def ratio(value: Optional[float], divisor: float) -> Optional[float]:
  """value / divisor, None for a value not measured."""
  return None if value is None else value / divisor


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


def compiled_cost(jitted: Callable, args: Sequence[Any]) -> dict[str, float]:
  """`xla_cost` of `jitted` for `args` (compiled, not run)."""
  return xla_cost(jitted.lower(*args).compile())


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

  step_cost = compiled_cost(
      jax.jit(guided_denoise),
      (nn.meta.unbox(motion_dit.abstract_variables(unrolled_model)["params"]), noisy_motion,
       timestep, conditions, drops))
  flops_per_step, bytes_per_step = step_cost["flops"], step_cost["bytes"]
  results = {"parameters": parameter_total(params), "flops_per_step": flops_per_step,
             "bytes_per_step": bytes_per_step, "by_steps": {}}
  for steps in steps_list:
    sampler = sampler_lib.MotionSampler(config, params, unit_statistics, num_steps=steps)
    # The sampler's own jitted window function: what `sample_window` and `MotionStream.push` call.
    timing = measure(sampler._window_fn,  # pylint: disable=protected-access
                     (sampler.params, conditions, drops, noise_rng, *lambdas), repeats, warmup,
                     f"motion window, {steps} steps", static_kwargs={"num_steps": steps})
    results["by_steps"][steps] = {
        "window_ms": timing["ms"], "per_frame_ms": ratio(timing["ms"], model.window),
        "compile_s": timing["compile_s"],
        # Cost analysis counts a scan body once (steps, and layers when scanned): the raw figure
        # undercounts, the window's FLOPs are per step x steps.
        "flops_per_window": flops_per_step * steps,
        "bytes_per_window": bytes_per_step * steps,
        "flops_per_window_xla_raw": timing["flops"]}
  return results


def random_decoder(config, seed: int) -> tuple[Callable, tuple, int]:
  """(jitted decode(params, volume, z_id, motion [B, M]) -> uint8 [B, S, S, 3] as `TalkingHead`
  runs it, (params, volume, z_id) with random weights and appearance, motion width M)."""
  model_config = config.model
  model = autoencoder_lib.FaceAutoencoder.from_config(model_config)
  depth, height, width = autoencoder_lib.volume_shape(model_config)
  volume_rng, identity_rng = jax.random.split(jax.random.key(seed))
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

  return jax.jit(decode), (params, volume, z_id), motion_dim


def bench_decoder(config, batch_sizes: Sequence[int], repeats: int, warmup: int,
                  seed: int) -> dict[str, Any]:
  """Decoder timings and FLOPs per batch size, and the autoencoder's parameter counts."""
  decode, (params, volume, z_id), motion_dim = random_decoder(config, seed)
  motion_rng = jax.random.fold_in(jax.random.key(seed), 1)
  counts = autoencoder_lib.parameter_counts(
      autoencoder_lib.abstract_variables(config.model)["params"])
  results = {"parameters_total": counts["total"],
             "parameters_decode_path": parameter_total(params),
             "image_size": config.model.image_size, "by_batch": {}}
  for batch in batch_sizes:
    motion = 0.1 * jax.random.normal(jax.random.fold_in(motion_rng, batch), (batch, motion_dim))
    timing = measure(decode, (params, volume, z_id, motion), repeats, warmup,
                     f"decode, batch {batch}")
    results["by_batch"][batch] = {
        "call_ms": timing["ms"], "per_frame_ms": ratio(timing["ms"], batch),
        "compile_s": timing["compile_s"], "flops_per_frame": timing["flops"] / batch,
        "bytes_per_frame": timing["bytes"] / batch}
  return results


def bench_audio(wav2vec2_config: transformers.Wav2Vec2Config, block_seconds: float,
                repeats: int, warmup: int, seed: int) -> dict[str, Any]:
  """Wav2Vec2 forward timing and FLOPs of one feature block as the repo runs it: the block's
  frames, WAV2VEC2_CONTEXT_SECONDS before and WAV2VEC2_LOOKAHEAD_SECONDS after, zero-padded to
  whole seconds (`speech_features.wav2vec2_featurizer`)."""
  segment_seconds = (block_seconds + speech_features.WAV2VEC2_CONTEXT_SECONDS
                     + speech_features.WAV2VEC2_LOOKAHEAD_SECONDS)
  num_samples = math.ceil(segment_seconds) * audio_lib.SAMPLE_RATE
  bundle = random_wav2vec2(wav2vec2_config, seed)
  waveform = jax.random.normal(jax.random.key(seed), (1, num_samples))
  block = measure(bundle.forward, (bundle.params, waveform, jnp.array([num_samples], jnp.int32)),
                  repeats, warmup, f"Wav2Vec2, {num_samples} samples")
  return {"parameters": parameter_total(bundle.params), "block_seconds": block_seconds,
          "segment_seconds": segment_seconds, "forward_seconds": num_samples / 16_000,
          "block_forward_ms": block["ms"], "block_compile_s": block["compile_s"],
          "ms_per_second": ratio(block["ms"], block_seconds),
          "flops_per_second": block["flops"] / block_seconds,
          "bytes_per_second": block["bytes"] / block_seconds}


# ----------------------------------------------------------------------------------------------
# The whole pipeline, measured: offline vs streaming on the same audio.
# ----------------------------------------------------------------------------------------------
def random_wav2vec2(wav2vec2_config: transformers.Wav2Vec2Config,
                    seed: int) -> audio_lib.Wav2Vec2Bundle:
  """A Wav2Vec2 bundle with random weights (normalising its input, as the released ones)."""
  module = audio_lib.Wav2Vec2Model(wav2vec2_config)
  params = random_params(jax.eval_shape(
      module.init, jax.random.key(0), jax.ShapeDtypeStruct((1, 16_000), jnp.float32))["params"],
                         seed)
  return audio_lib.wav2vec2_bundle(wav2vec2_config, params)


def speech_like(seconds: float, seed: int) -> np.ndarray:
  """float32 [N] 16 kHz: a 150 Hz buzz with harmonics, its loudness changing every 0.2 s (words)
  and slowly over the clip, over a little noise."""
  rng = np.random.default_rng(seed)
  time_axis = np.arange(round(seconds * audio_lib.SAMPLE_RATE)) / audio_lib.SAMPLE_RATE
  voice = sum(np.sin(2 * np.pi * 150 * k * time_axis) / k for k in range(1, 6))
  words = rng.uniform(0, 1, math.ceil(seconds / 0.2) + 1)[(time_axis / 0.2).astype(int)]
  loudness = 0.05 + 0.2 * words * (1 + 0.5 * np.sin(2 * np.pi * time_axis / 7.0))
  return (loudness * voice + 0.005 * rng.standard_normal(len(time_axis))).astype(np.float32)


def feature_difference(featurizer: speech_features.SpeechFeaturizer,
                       bundle: audio_lib.Wav2Vec2Bundle, waveform: np.ndarray, layer: int,
                       fps: float) -> dict[str, float]:
  """How far the block features (fixed context, per-block normalisation) are from whole-clip
  features (one forward over the clip normalised as a whole)."""
  blocks = featurizer(waveform)  # [T, H]
  whole = audio_lib.audio_features(bundle, waveform, fps=fps, layer=layer,
                                   chunk_seconds=math.ceil(len(waveform) / audio_lib.SAMPLE_RATE))
  difference = np.abs(blocks - whole)
  cosine = np.sum(blocks * whole, -1) / (np.linalg.norm(blocks, axis=-1)
                                         * np.linalg.norm(whole, axis=-1) + 1e-12)
  return {"frames": len(whole), "mean_abs_whole": float(np.abs(whole).mean()),
          "mean_abs_difference": float(difference.mean()),
          "relative_difference": float(np.linalg.norm(blocks - whole) / np.linalg.norm(whole)),
          "max_abs_difference": float(difference.max()),
          "cosine_mean": float(cosine.mean()), "cosine_min": float(cosine.min())}


def measure_pipeline(motion_config, latent_config, featurizer: speech_features.SpeechFeaturizer,
                     waveform: np.ndarray, steps: int, chunk_frames: int, decode_batch: int,
                     seed: int, rounds: int) -> dict[str, Any]:
  """Offline and streaming (chunks of `chunk_frames` frames fed as fast as they are consumed) on
  the same audio, with the repo's own pieces: `featurizer` / `StreamingFeatures`,
  `MotionSampler.generate` / `MotionStream`, and the decoder in batches of `decode_batch`.

  Both run once to compile, then `rounds` times alternately; figures of the median round.
  Returns frames/s of each (frames / wall time of the whole run, and frames / CPU time of this
  process, which other processes on a shared machine do not inflate), whether their motion is equal,
  and the streaming first frame's compute latency split into features (the calls until the first
  window's features are in), motion (the first window call) and decode (the first decoder call),
  plus the audio a stream waits for before that window (W frames and the look-ahead).
  """
  motion_config = motion_config.copy_and_resolve_references()
  motion_config.model.audio_dim = featurizer.dim
  model = motion_dit.MotionDiT.from_config(motion_config.model)
  params = random_params(motion_dit.abstract_variables(model)["params"], seed)
  unit_statistics = {name: {"mean": np.zeros(shape), "std": np.ones(shape)}
                     for name, shape in sampler_lib.statistics_shapes(motion_config.model).items()}
  sampler = sampler_lib.MotionSampler(motion_config, params, unit_statistics, num_steps=steps)
  decode, decode_args, motion_dim = random_decoder(latent_config, seed)
  if motion_dim != sampler.motion_dim:
    raise SystemExit(f"the latent config's motion width {motion_dim} is not the motion "
                     f"config's {sampler.motion_dim}")

  def render(motion):  # [n, M] -> frames, in batches as `FaceRenderer.render` makes them
    frames = []
    for start in range(0, len(motion), decode_batch):
      batch = motion[start:start + decode_batch]
      size = talking_head.decoder_batch(len(batch), decode_batch)
      padded = np.concatenate([batch, np.repeat(batch[-1:], size - len(batch), 0)])
      frames.append(np.asarray(decode(*decode_args, padded))[:len(batch)])
    return frames

  def offline():
    motion = sampler.generate(featurizer(waveform), seed=seed)
    return motion, render(motion)

  def stream():
    features = streaming.StreamingFeatures(featurizer)
    motion_stream = sampler.start_stream(seed=seed)
    parts, first, seconds = [], None, {"features": 0.0, "motion": 0.0, "decode": 0.0}
    chunks = list(streaming.audio_chunks(waveform, chunk_frames, featurizer.fps)) + [None]
    start_time = time.perf_counter()
    for chunk in chunks:
      tick = time.perf_counter()
      new_features = features.finish() if chunk is None else features.push(chunk)
      seconds["features"] += time.perf_counter() - tick
      tick = time.perf_counter()
      motion = motion_stream.push(new_features)
      if chunk is None:
        motion = np.concatenate([motion, motion_stream.finish()])
      seconds["motion"] += time.perf_counter() - tick
      for start in range(0, len(motion), decode_batch):
        tick = time.perf_counter()
        render(motion[start:start + decode_batch])
        seconds["decode"] += time.perf_counter() - tick
        if first is None:  # compute spent when the first frame is out
          first = {name: 1000 * value for name, value in seconds.items()}
      parts.append(motion)
    return np.concatenate(parts), time.perf_counter() - start_time, first, seconds

  offline()  # compiles every shape (feature segments, window, decoder batch)
  stream()
  offline_times, stream_times, offline_cpu, stream_cpu, stream_runs = [], [], [], [], []
  for _ in range(rounds):  # alternated, so that a change of the machine's load hits both
    start_time, start_cpu = time.perf_counter(), time.process_time()
    offline_motion, _ = offline()
    offline_times.append(time.perf_counter() - start_time)
    offline_cpu.append(time.process_time() - start_cpu)
    start_cpu = time.process_time()
    stream_runs.append(stream())
    stream_cpu.append(time.process_time() - start_cpu)
    stream_times.append(stream_runs[-1][1])
  offline_s, stream_s = statistics.median(offline_times), statistics.median(stream_times)
  offline_cpu_s, stream_cpu_s = statistics.median(offline_cpu), statistics.median(stream_cpu)
  streamed_motion, _, first, seconds = sorted(stream_runs, key=lambda run: run[1])[
      len(stream_runs) // 2]  # the median run
  frames = len(offline_motion)
  hop = audio_lib.SAMPLE_RATE / featurizer.fps
  first_window = min(frames, sampler.window)
  audio_wait_s = min(len(waveform), math.ceil(first_window * hop) + featurizer.lookahead_samples
                     ) / audio_lib.SAMPLE_RATE
  return {
      "steps": steps, "frames": frames, "audio_seconds": len(waveform) / audio_lib.SAMPLE_RATE,
      "offline_fps": frames / offline_s, "streaming_fps": frames / stream_s,
      "streaming_over_offline": offline_s / stream_s,
      # Frames per CPU second of this process (all its threads): the work, whatever else runs.
      "offline_fps_cpu_time": frames / offline_cpu_s,
      "streaming_fps_cpu_time": frames / stream_cpu_s,
      "streaming_over_offline_cpu_time": offline_cpu_s / stream_cpu_s,
      "streamed_motion_equals_offline": bool(np.array_equal(streamed_motion, offline_motion)),
      "first_frame_compute_ms": {**first, "total": sum(first.values())},
      "first_frame_audio_wait_ms": 1000 * audio_wait_s,
      "streaming_seconds_by_part": seconds, "offline_seconds_each_round": offline_times,
      "streaming_seconds_each_round": stream_times, "offline_cpu_seconds_each_round": offline_cpu,
      "streaming_cpu_seconds_each_round": stream_cpu}


# ----------------------------------------------------------------------------------------------
# Pipeline figures.
# ----------------------------------------------------------------------------------------------
def pipeline_figures(motion: dict, decoder: Optional[dict], audio: Optional[dict], window: int,
                     fps: float) -> dict[int, dict[str, Optional[float]]]:
  """Figures per step count from the component measurements (decode and features count as zero
  when skipped; the report's notes say so); {} when nothing was timed. Offline and streaming do
  the same work per frame (the same feature blocks and windows), so one frame rate stands for
  both; the first-frame latency is the compute of the first window's feature blocks, one window
  and one decoder call at the smallest batch, after W frames of audio have arrived."""
  if any(timing["window_ms"] is None for timing in motion["by_steps"].values()):
    return {}
  decode_batch_1 = decode_large = {"call_ms": 0.0, "per_frame_ms": 0.0, "flops_per_frame": 0.0}
  if decoder:
    batches = decoder["by_batch"]
    decode_batch_1, decode_large = batches[min(batches)], batches[max(batches)]
  audio_ms_per_frame = audio["ms_per_second"] / fps if audio else 0.0
  audio_flops_per_frame = audio["flops_per_second"] / fps if audio else 0.0
  first_blocks_ms = (math.ceil(window / (audio["block_seconds"] * fps)) * audio["block_forward_ms"]
                     if audio else 0.0)
  figures = {}
  for steps, timing in motion["by_steps"].items():
    offline_ms = timing["per_frame_ms"] + decode_large["per_frame_ms"] + audio_ms_per_frame
    figures[steps] = {
        "offline_ms_per_frame": offline_ms, "offline_fps": 1000 / offline_ms,
        "first_frame_latency_ms": first_blocks_ms + timing["window_ms"]
                                  + decode_batch_1["call_ms"],
        "flops_per_frame": (timing["flops_per_window"] / window
                            + decode_batch_1["flops_per_frame"] + audio_flops_per_frame)}
  return figures


def roofline_time(flops: float, num_bytes: float, gpu: Mapping[str, Any]) -> dict[str, Any]:
  """The roofline of one function's work on `gpu`: its time is at least the larger of
  FLOPs / peak FLOP/s (compute roof) and bytes / memory bandwidth (memory roof)."""
  compute_s = flops / gpu["bf16_tensor_flops"]
  memory_s = num_bytes / gpu["memory_bytes_per_s"]
  return {"compute_ms": 1000 * compute_s, "memory_ms": 1000 * memory_s,
          "ms": 1000 * max(compute_s, memory_s),
          "bound_by": "compute" if compute_s >= memory_s else "memory",
          "flops_per_byte": flops / num_bytes if num_bytes else float("inf")}


def roofline(motion: dict, decoder: Optional[dict], audio: Optional[dict], window: int,
             fps: float, bytes_scale: float = 1.0) -> dict[str, dict[int, dict[str, Any]]]:
  """{GPU: {steps: per-function rooflines per frame, the frame-time floor, the frame-rate
  ceiling, and the function that bounds it}}.

  Per frame: the motion window's FLOPs and bytes / W; the decoder's at its largest batch (the
  throughput setting; its weights are read once per batch); Wav2Vec2's per second of audio /
  fps. bytes_scale multiplies every byte count (0.5: activations and weights moved as bf16
  instead of the float32 these programs were compiled with). A skipped function is left out.
  """
  per_frame = {}
  if decoder:
    batches = decoder["by_batch"]
    largest = batches[max(batches)]
    per_frame["decoder"] = (largest["flops_per_frame"], largest["bytes_per_frame"])
  if audio:
    per_frame["Wav2Vec2"] = (audio["flops_per_second"] / fps, audio["bytes_per_second"] / fps)
  result = {}
  for name, gpu in GPUS.items():
    result[name] = {}
    for steps, timing in motion["by_steps"].items():
      work = {"motion window": (timing["flops_per_window"] / window,
                                timing["bytes_per_window"] / window), **per_frame}
      functions = {function: roofline_time(flops, bytes_scale * num_bytes, gpu)
                   for function, (flops, num_bytes) in work.items()}
      frame_ms = sum(function["ms"] for function in functions.values())
      bounding = max(functions, key=lambda function: functions[function]["ms"])
      result[name][steps] = {
          "functions": functions, "frame_ms": frame_ms, "fps_ceiling": 1000 / frame_ms,
          "bounded_by": bounding, "bounded_by_roof": functions[bounding]["bound_by"],
          "bounding_share": functions[bounding]["ms"] / frame_ms}
  return result


def _ms(value: Optional[float], decimals: int) -> str:
  return "-" if value is None else f"{value:.{decimals}f}"


def markdown_tables(report: dict) -> str:
  """The report as two markdown tables: components, then pipeline figures per step count."""
  lines = ["| component | time per call (ms) | per frame (ms) | compile (s) | GFLOP per frame |",
           "|---|---:|---:|---:|---:|"]
  window = report["shapes"]["window"]
  for steps, timing in report["motion"]["by_steps"].items():
    lines.append(f"| motion window W={window}, {steps} steps (guided 3B batch) | "
                 f"{_ms(timing['window_ms'], 1)} | {_ms(timing['per_frame_ms'], 2)} | "
                 f"{timing['compile_s']:.1f} | {timing['flops_per_window'] / window / 1e9:.2f} |")
  if report["decoder"]:
    size = report["decoder"]["image_size"]
    for batch, timing in report["decoder"]["by_batch"].items():
      lines.append(f"| decode {size}x{size}, batch {batch} | {_ms(timing['call_ms'], 1)} | "
                   f"{_ms(timing['per_frame_ms'], 2)} | {timing['compile_s']:.1f} | "
                   f"{timing['flops_per_frame'] / 1e9:.2f} |")
  if report["audio"]:
    audio, fps = report["audio"], report["shapes"]["fps"]
    lines.append(f"| {report['configs']['audio'].split(':')[0]}, {audio['block_seconds']:g} s "
                 f"block ({audio['forward_seconds']:g} s forward) | "
                 f"{_ms(audio['block_forward_ms'], 1)} | "
                 f"{_ms(ratio(audio['ms_per_second'], fps), 2)} | "
                 f"{audio['block_compile_s']:.1f} | "
                 f"{audio['flops_per_second'] / fps / 1e9:.2f} |")
  lines += ["", "| steps | offline = streaming FPS (from components) | first-frame compute "
            "latency (ms) | GFLOP per frame |", "|---:|---:|---:|---:|"]
  for steps, figures in report["pipeline"].items():
    lines.append(f"| {steps} | {figures['offline_fps']:.2f} | "
                 f"{figures['first_frame_latency_ms']:.1f} | "
                 f"{figures['flops_per_frame'] / 1e9:.2f} |")
  if report["measured"]:
    measured = report["measured"]
    lines += ["", f"Measured end to end ({measured['audio_seconds']:g} s of audio, chunks of "
              f"{report['shapes']['chunk_frames']} frames; load average "
              f"{measured['load_average_before'][0]:.1f} before, "
              f"{measured['load_average_after'][0]:.1f} after):", "",
              "| steps | offline FPS | streaming FPS | streaming / offline | same, per CPU second "
              "| streamed = offline | first frame: audio wait (ms) | features | motion | decode | "
              "compute total |", "|---:|---:|---:|---:|---|---|---:|---:|---:|---:|---:|"]
    for steps, run in measured["by_steps"].items():
      first = run["first_frame_compute_ms"]
      lines.append(f"| {steps} | {run['offline_fps']:.2f} | {run['streaming_fps']:.2f} | "
                   f"{run['streaming_over_offline']:.2f} | "
                   f"{run['offline_fps_cpu_time']:.2f} / {run['streaming_fps_cpu_time']:.2f} = "
                   f"{run['streaming_over_offline_cpu_time']:.2f} | "
                   f"{run['streamed_motion_equals_offline']} | "
                   f"{run['first_frame_audio_wait_ms']:.0f} | {first['features']:.1f} | "
                   f"{first['motion']:.1f} | {first['decode']:.1f} | {first['total']:.1f} |")
    if measured.get("feature_difference"):
      difference = measured["feature_difference"]
      lines += ["", f"Block features vs whole-clip features ({difference['frames']} frames): "
                f"relative L2 {difference['relative_difference']:.4f}, mean |diff| "
                f"{difference['mean_abs_difference']:.4g} (mean |feature| "
                f"{difference['mean_abs_whole']:.4g}), cosine mean "
                f"{difference['cosine_mean']:.4f}, min {difference['cosine_min']:.4f}"]
  lines += ["", "| GPU (roofline) | steps | bytes as | " + " | ".join(
      f"{function} ms/frame (roof)" for function in ROOFLINE_FUNCTIONS)
            + " | FPS ceiling | bounded by |", "|---|---:|---|" + "---:|" * 4 + "---|"]
  for precision, key in (("float32", "roofline"), ("bf16", "roofline_bf16_bytes")):
    for gpu, by_steps in report[key].items():
      for steps, entry in by_steps.items():
        cells = []
        for function in ROOFLINE_FUNCTIONS:
          timing = entry["functions"].get(function)
          cells.append("-" if timing is None else f"{timing['ms']:.3f} ({timing['bound_by']})")
        lines.append(f"| {gpu} | {steps} | {precision} | " + " | ".join(cells) +
                     f" | {entry['fps_ceiling']:.0f} | {entry['bounded_by']} "
                     f"({entry['bounded_by_roof']}, {entry['bounding_share']:.0%}) |")
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
  parser.add_argument("--repeats", type=int, default=3,
                      help="timed calls per measurement (0: compile for the cost analysis and "
                           "the roofline only, run nothing)")
  parser.add_argument("--warmup", type=int, default=1,
                      help="untimed calls before the timed ones (0 saves time on a CPU)")
  parser.add_argument("--steps", type=_ints, default=[50, 10], help="denoising step counts")
  parser.add_argument("--decode_batches", type=_ints, default=[1, 8],
                      help="decoder batch sizes (the smallest: first-frame latency; the largest: "
                           "throughput)")
  parser.add_argument("--chunk_frames", type=int, default=10,
                      help="streaming chunk in video frames (10 = 0.4 s at 25 fps)")
  parser.add_argument("--stream_seconds", type=float, default=0.0,
                      help="measure offline and streaming end to end on this many seconds of "
                           "audio (0: not measured; needs the decoder)")
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
  if args.repeats < 0 or args.warmup < 0 or not args.steps or not args.decode_batches:
    raise SystemExit("--steps and --decode_batches need at least one value, --repeats and "
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
  wav2vec2_config = transformers.Wav2Vec2Config(**(TINY_WAV2VEC2 if args.tiny else {}))
  if not args.skip_audio:
    audio = bench_audio(wav2vec2_config, motion_config.audio.chunk_seconds, args.repeats,
                        args.warmup, args.seed)
  measured = None
  if args.stream_seconds > 0 and not args.skip_decoder and args.repeats > 0:
    waveform = speech_like(args.stream_seconds, args.seed)
    measured = {"audio_seconds": args.stream_seconds, "decode_batch": max(args.decode_batches),
                "load_average_before": list(os.getloadavg()), "by_steps": {}}
    if args.skip_audio:
      featurizer = speech_features.log_mel_featurizer(fps, motion_config.audio.num_mels)
    else:
      bundle = random_wav2vec2(wav2vec2_config, args.seed)
      featurizer = speech_features.wav2vec2_featurizer(bundle, fps, -1,
                                                       motion_config.audio.chunk_seconds)
      measured["feature_difference"] = feature_difference(featurizer, bundle, waveform, -1, fps)
    for steps in args.steps:
      print(f"  measured pipeline, {steps} steps", flush=True)
      measured["by_steps"][steps] = measure_pipeline(
          motion_config, latent_config, featurizer, waveform, steps, args.chunk_frames,
          max(args.decode_batches), args.seed, args.repeats)
    measured["load_average_after"] = list(os.getloadavg())

  notes = [
      "Weights are RANDOMLY INITIALISED (no pretrained weights exist here); run time and FLOPs "
      "do not depend on weight values.",
      (f"Times: median of {args.repeats} timed call(s) after {args.warmup} untimed warm-up "
       "call(s), compilation excluded (compile_s apart). Offline and streaming figures are "
       "computed from the component times." if args.repeats else
       "--repeats=0: every function was compiled for its cost analysis and none was run; no "
       "timings and no CPU frame rates (pipeline is empty), compile_s only."),
      "XLA's cost analysis counts a lax.scan body ONCE (checked: the window function's figure is "
      "the same at every step count), so flops_per_window = flops_per_step x steps, with "
      "flops_per_step from one compiled guided denoise call (the batched 3B network call) of the "
      "MotionDiT with its layers unrolled (the paper config scans them, which cost analysis would "
      "also count once). flops_per_window_xla_raw is the raw cost analysis of the whole window "
      "function (one step, one layer), kept for reference. Gathers (trilinear warps) and "
      "elementwise work count little in XLA's FLOPs.",
      "Offline per frame (from components): window time / W + decode per frame at the largest "
      "batch + one Wav2Vec2 block forward / its frames. A stream does the same work per frame "
      "(the same feature blocks and motion windows, `vasa_jax.inference.streaming`); its "
      "first-frame latency (from components) = the first window's feature blocks + one window "
      "call + one decoder call at the smallest batch, after W frames of audio (and the features' "
      "look-ahead) have arrived.",
      "measured (--stream_seconds > 0): offline (`featurizer(waveform)`, `MotionSampler.generate`, "
      "decode in batches of the largest --decode_batches) and streaming (`StreamingFeatures`, "
      "`MotionStream`, decode per window; audio in chunks of --chunk_frames frames, fed as fast "
      "as they are consumed) on the same synthetic speech, every shape compiled first, then "
      "--repeats rounds alternating offline and streaming; frames/s = frames / median "
      "wall time of the whole run; *_cpu_time: frames / median CPU time of this process (all "
      "its threads), the work done, which other jobs on a shared machine do not inflate. "
      "first_frame_compute_ms: the compute spent by the "
      "stream when its first frame is out, by part; first_frame_audio_wait_ms: the audio a live "
      "stream waits for before that (one window of frames and the features' look-ahead). "
      "load_average_*: os.getloadavg() (the machine may be shared).",
      "feature_difference: the block features (each block's forward on its segment, normalised "
      "per segment) against one forward over the whole clip normalised as a whole, with the "
      "RANDOM Wav2Vec2 weights (a trained model's attention may weigh distant context "
      "differently).",
      "GPU projection: a ROOFLINE per compiled function, not a measurement (no GPU measured "
      "here). Per frame, each function's time is at least max(FLOPs / dense bf16 tensor-core "
      "peak, bytes accessed / DRAM bandwidth) (peaks and their sources in `gpus`); the frame "
      "rate is at most 1 / the sum over the motion window (/ W), the decoder (largest batch, / "
      "batch) and Wav2Vec2 (/ fps of audio). FLOPs and bytes are XLA's cost analysis of these "
      "programs as compiled HERE (CPU, float32): GPU fusion and layouts move different bytes, "
      "and bf16 halves activation and weight traffic, so `roofline` takes the float32 bytes "
      "and `roofline_bf16_bytes` half of them. Taking every FLOP at the tensor-core peak is "
      "optimistic for the non-matmul work (norms, upsampling, warps: CUDA-core FP32 peaks are "
      "in `gpus`). Real kernels reach a fraction of either roof: these are ceilings, not "
      "expected frame rates.",
  ]
  if device.platform != "gpu":
    notes.append(f"Measured on {device.platform}, not on a GPU: no measured GPU frame rate or "
                 "latency exists in this report, only the roofline ceilings.")
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
      "pipeline": pipeline_figures(motion, decoder, audio, window, fps),
      "measured": measured,
      "gpus": GPUS,
      "roofline": roofline(motion, decoder, audio, window, fps),
      "roofline_bf16_bytes": roofline(motion, decoder, audio, window, fps, bytes_scale=0.5),
      "notes": notes,
  }
  print(markdown_tables(report))
  with open(args.output, "w", encoding="utf-8") as f:
    json.dump(report, f, indent=1)
  print(f"wrote {args.output}")
  return report


if __name__ == "__main__":
  main()
