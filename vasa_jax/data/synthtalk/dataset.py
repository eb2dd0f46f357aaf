"""SynthTalk: a synthetic talking-head data set with ground truth, in the clip record format.

Each speaker is a procedurally rendered head (`vasa_jax.data.synthtalk.render`) with a voice; each clip
is real speech from espeak-ng (or, where espeak-ng is missing, a synthetic pseudo-speech signal),
a mouth that opens with the speech's energy, head motion loosely tied to the speech plus slow
drift, blinks and gaze saccades, and (with --expression_fraction > 0) an expression held over
the clip: a smile or raised brows, whose ground-truth emotion scores the record's `emotion`
annotation holds (`expression_scores`). The records carry every factor that rendered each frame
(`ground_truth`), so later stages can measure disentanglement and lip sync against ground truth
and render any identity with any other clip's motion.

  python -m data_prep.synthtalk --output_dir=/data/synthtalk --num_speakers=100 --resolution=128

Speakers are split into disjoint "train" and "test" sets. The output directory holds ArrayRecord
shards named by `records.shard_name` and a manifest (`records.write_manifest`). The same flags and
seed give identical records, whatever the number of workers.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import logging
import math
import multiprocessing
import os
import shutil
import subprocess
from typing import Any, Iterator, Sequence

import numpy as np
from scipy import signal
from tqdm import tqdm

from vasa_jax.data import media
from vasa_jax.data.synthtalk import render as render_lib
from vasa_jax.data import records

logger = logging.getLogger(__name__)

ESPEAK = "espeak-ng"
SPLITS = ("train", "test")

_SENTENCES = (
    "The morning train was late again, so we walked along the river instead.",
    "Please put the blue folder on the table next to the window.",
    "I never thought a small garden could grow so many tomatoes.",
    "She answered every question with a calm and steady voice.",
    "We should check the weather before we leave for the mountains.",
    "The old clock in the hallway still chimes every hour.",
    "Could you tell me where the nearest library is?",
    "He painted the fence white and then sat down to rest.",
    "Fresh bread smells wonderful early in the morning.",
    "The children laughed when the puppy chased its own tail.",
    "Our meeting has been moved to Thursday afternoon.",
    "A cold wind blew across the empty parking lot.",
    "My brother is learning to play the violin this year.",
    "The museum opens at nine and closes at five.",
    "Bright lights flickered over the harbour at night.",
    "Let me know if you need any help with the boxes.",
    "The recipe calls for two eggs and a cup of milk.",
    "They built a wooden bridge across the narrow stream.",
    "Nobody expected the concert to sell out so quickly.",
    "The scientist measured the temperature twice to be sure.",
    "Turn left at the bakery and walk straight for two blocks.",
    "I would love a cup of tea with a little honey.",
    "The storm knocked out the power for several hours.",
    "Every summer we visit our grandparents by the sea.",
    "The teacher wrote a long list of words on the board.",
    "Maybe we can finish the puzzle after dinner.",
    "The bicycle needs new brakes and a better seat.",
    "His favourite book is about a journey to the moon.",
    "The market was crowded with people buying fruit.",
    "Remember to water the plants while I am away.",
    "The pilot announced that we would land in twenty minutes.",
    "Quiet streets and warm evenings make this town special.",
    "She keeps her notes in a small green notebook.",
    "The dog waited patiently by the door all afternoon.",
    "We watched the sunset from the top of the hill.",
    "Good ideas often come when you least expect them.",
    "The kitchen window looks out over a field of sunflowers.",
    "Thank you for coming, it was really nice to see you.",
    "How many people are coming to the party on Saturday?",
    "The river was so clear that we could see the fish.",
)

# espeak-ng English voices and voice variants (the variants ship with espeak-ng).
_ESPEAK_LANGUAGES = ("en", "en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-029")
_ESPEAK_VARIANTS = ("m1", "m2", "m3", "m4", "f1", "f2", "f3", "f4")

# Motion model constants.
_MOUTH_LEAD_FRAMES = 1        # the mouth opens ~40 ms before the sound it makes
_BLINK_SECONDS = (0.15, 0.25)
_MAX_ANGLES = {"yaw": 35.0, "pitch": 20.0, "roll": 15.0}
# A clip's expression: its factor in the renderer and the emotion class it shows (scores in
# records.EMOTION_CLASSES order; "none" is neutral).
EXPRESSIONS = {"none": (None, "neutral"), "smile": ("smile", "happiness"),
               "brow_raise": ("brow_raise", "surprise")}
_EXPRESSION_STRENGTH = (0.7, 1.0)  # uniform range of an expressive clip's factor


# ----------------------------------------------------------------------------------------------
# Speakers.
# ----------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Speaker:
  """What stays fixed across a speaker's clips: the head, the voice, the manner of moving."""
  speaker_id: str
  identity: render_lib.Identity
  voice: str               # espeak-ng voice, e.g. "en-gb+f2"
  voice_pitch: int         # espeak-ng pitch, 0-99
  base_f0: float           # Hz, for the synthetic pseudo-speech
  yaw_bias: float          # degrees
  pitch_bias: float        # degrees
  motion_scale: float      # head motion amplitude multiplier
  articulation: float      # how wide the mouth opens at full loudness, 0-1
  blink_rate: float        # blinks per second
  gaze_bias: tuple[float, float]  # eye (theta, phi) rest direction, degrees


def speaker_id(index: int) -> str:
  return f"synth{index:05d}"


def make_speaker(seed: int, index: int) -> Speaker:
  """The speaker `index` of the data set made with `seed` (deterministic)."""
  rng = np.random.default_rng([seed, index])
  identity = render_lib.sample_identity(rng)
  variant = _ESPEAK_VARIANTS[rng.integers(len(_ESPEAK_VARIANTS))]
  return Speaker(
      speaker_id=speaker_id(index),
      identity=identity,
      voice=f"{_ESPEAK_LANGUAGES[rng.integers(len(_ESPEAK_LANGUAGES))]}+{variant}",
      voice_pitch=int(rng.integers(30, 71)),
      base_f0=float(rng.uniform(95.0, 140.0) if variant.startswith("m")
                    else rng.uniform(170.0, 240.0)),
      yaw_bias=float(rng.uniform(-12.0, 12.0)),
      pitch_bias=float(rng.uniform(-6.0, 6.0)),
      motion_scale=float(rng.uniform(0.5, 1.4)),
      articulation=float(rng.uniform(0.65, 1.0)),
      blink_rate=float(rng.uniform(0.2, 0.45)),
      gaze_bias=(float(rng.uniform(-6.0, 6.0)), float(rng.uniform(-4.0, 4.0))))


def split_speakers(num_speakers: int, test_fraction: float, seed: int) -> dict[str, list[int]]:
  """Speaker indices per split: a seeded choice of round(test_fraction * n) test speakers, at
  least one when there are two or more speakers and test_fraction > 0."""
  num_test = 0
  if num_speakers >= 2 and test_fraction > 0:
    num_test = min(num_speakers - 1, max(1, round(num_speakers * test_fraction)))
  order = np.random.default_rng([seed, 1_000_003]).permutation(num_speakers)
  test = sorted(int(i) for i in order[:num_test])
  return {"train": sorted(set(range(num_speakers)) - set(test)), "test": test}


# ----------------------------------------------------------------------------------------------
# Audio.
# ----------------------------------------------------------------------------------------------
def espeak_available() -> bool:
  return shutil.which(ESPEAK) is not None


def espeak_speech(text: str, voice: str, words_per_minute: int, pitch: int) -> np.ndarray:
  """Speech from espeak-ng as float32 mono at records.AUDIO_SAMPLE_RATE, in [-1, 1]."""
  result = subprocess.run(
      [ESPEAK, "-v", voice, "-s", str(words_per_minute), "-p", str(pitch), "--stdout", text],
      capture_output=True, check=True, timeout=60)
  wav = result.stdout
  data_start = wav.find(b"data")
  if wav[:4] != b"RIFF" or data_start < 0:
    raise RuntimeError(f"espeak-ng returned no WAV data for voice {voice!r}")
  sample_rate = int(np.frombuffer(wav[24:28], "<u4")[0])
  pcm = wav[data_start + 8:]
  samples = np.frombuffer(pcm[:len(pcm) // 2 * 2], "<i2").astype(np.float32) / 32768.0
  divisor = math.gcd(records.AUDIO_SAMPLE_RATE, sample_rate)
  return signal.resample_poly(samples, records.AUDIO_SAMPLE_RATE // divisor,
                              sample_rate // divisor).astype(np.float32)


def synthetic_speech(rng: np.random.Generator, seconds: float, base_f0: float) -> np.ndarray:
  """Pseudo-speech float32 at records.AUDIO_SAMPLE_RATE: voiced harmonic bursts (syllables of
  80-250 ms at ~4-5 per second, grouped into words and phrases) with a wandering pitch."""
  rate = records.AUDIO_SAMPLE_RATE
  length = int(seconds * rate)
  envelope = np.zeros(length, np.float32)
  position = 0
  while position < length:
    for _ in range(int(rng.integers(1, 4))):  # syllables of one word
      if position >= length:
        break
      duration = int(rng.uniform(0.08, 0.25) * rate)
      burst = np.sin(np.linspace(0.0, np.pi, duration)) ** 1.5 * rng.uniform(0.4, 1.0)
      end = min(length, position + duration)
      envelope[position:end] = burst[:end - position]
      position += duration + int(rng.uniform(0.02, 0.06) * rate)
    position += int(rng.choice([rng.uniform(0.05, 0.15), rng.uniform(0.3, 0.6)],
                               p=[0.8, 0.2]) * rate)
  t = np.arange(length) / rate
  drift = np.cumsum(rng.normal(0.0, 1.0, length)) / np.sqrt(rate) * 0.15
  f0 = base_f0 * (1.0 + 0.12 * np.sin(2 * np.pi * 0.7 * t + rng.uniform(0, 6.3)) + drift)
  phase = 2 * np.pi * np.cumsum(f0) / rate
  formant = rng.uniform(500.0, 900.0)
  voiced = sum(np.sin(k * phase) / k * np.exp(-((k * base_f0 - formant) / 600.0) ** 2)
               for k in range(1, 16))
  breath = rng.normal(0.0, 0.05, length)
  speech = (voiced + breath) * envelope
  return (0.5 * speech / (np.abs(speech).max() + 1e-9)).astype(np.float32)


def clip_audio(rng: np.random.Generator, speaker: Speaker, num_samples: int,
               use_espeak: bool) -> tuple[np.ndarray, str]:
  """A clip's audio, int16 [num_samples], and its text ("" for pseudo-speech).

  Speech starts after a short pause; sentences are added until the clip is full, and the last
  is cut where the clip ends.
  """
  rate = records.AUDIO_SAMPLE_RATE
  audio = np.zeros(num_samples, np.float32)
  start = int(rng.uniform(0.05, 0.35) * rate)
  texts = []
  if use_espeak:
    words_per_minute = int(rng.integers(140, 186))
    while start < num_samples - rate // 4 and len(texts) < 4:
      text = _SENTENCES[rng.integers(len(_SENTENCES))]
      speech = espeak_speech(text, speaker.voice, words_per_minute, speaker.voice_pitch)
      # espeak-ng pads with silence; keep the speech and a natural 100 ms around it.
      loud = np.flatnonzero(np.abs(speech) > 0.02)
      if loud.size:
        speech = speech[max(0, loud[0] - rate // 10):loud[-1] + rate // 10]
      end = min(num_samples, start + len(speech))
      audio[start:end] = speech[:end - start]
      texts.append(text)
      start = end + int(rng.uniform(0.1, 0.3) * rate)
  else:
    speech = synthetic_speech(rng, (num_samples - start) / rate, speaker.base_f0)
    audio[start:start + len(speech)] = speech[:num_samples - start]
  peak = np.abs(audio).max()
  if peak > 0:
    audio *= rng.uniform(0.3, 0.8) / peak
  return np.round(audio * 32767.0).astype(np.int16), " ".join(texts)


def audio_envelope(audio: np.ndarray, num_frames: int, fps: float) -> np.ndarray:
  """RMS of int16 audio in a one-frame window centred on each frame's time: float32 [num_frames]."""
  return media.speech_envelope(audio.astype(np.float32) / 32768.0, num_frames, fps,
                               records.AUDIO_SAMPLE_RATE)


# ----------------------------------------------------------------------------------------------
# Motion.
# ----------------------------------------------------------------------------------------------
def _smooth(values: np.ndarray, frames: float) -> np.ndarray:
  """Gaussian smoothing over a time constant of `frames` (> 0; edge values held)."""
  radius = int(3 * frames) + 1
  kernel = np.exp(-0.5 * (np.arange(-radius, radius + 1) / frames) ** 2)
  kernel /= kernel.sum()
  return np.convolve(np.pad(values, radius, mode="edge"), kernel, mode="valid")


def _drift(rng: np.random.Generator, num_frames: int, fps: float, amplitude: float) -> np.ndarray:
  """Slow random motion: a few sinusoids of 0.1-0.6 Hz, `amplitude` standard deviation."""
  t = np.arange(num_frames) / fps
  waves = sum(rng.normal() * np.sin(2 * np.pi * rng.uniform(0.1, 0.6) * t + rng.uniform(0, 6.3))
              for _ in range(3))
  return amplitude * waves / np.sqrt(1.5)


def mouth_from_envelope(envelope: np.ndarray, articulation: float) -> np.ndarray:
  """Mouth opening [T] in [0, 1] from the per-frame speech envelope: normalised by the clip's
  loud frames, lightly smoothed, leading the sound by _MOUTH_LEAD_FRAMES."""
  loud = envelope[envelope > 0.1 * envelope.max()] if envelope.max() > 0 else envelope
  reference = np.percentile(loud, 90) if loud.size else 1.0
  level = np.clip(envelope / max(reference, 1e-6), 0.0, 1.2) / 1.2
  level = _smooth(level, 0.6)
  lead = np.concatenate([level[_MOUTH_LEAD_FRAMES:], np.repeat(level[-1:], _MOUTH_LEAD_FRAMES)])
  return np.clip(articulation * lead, 0.0, 1.0)


def _blinks(rng: np.random.Generator, num_frames: int, fps: float, rate: float) -> np.ndarray:
  """Eyelid closure [T] in [0, 1]: blinks at Poisson times, 150-250 ms each (fast close,
  slower opening)."""
  closure = np.zeros(num_frames)
  t = np.arange(num_frames) / fps
  onset = rng.exponential(1.0 / rate) - rng.uniform(0.0, 1.0 / rate)
  while onset < num_frames / fps:
    duration = rng.uniform(*_BLINK_SECONDS)
    phase = (t - onset) / duration
    shape = np.where(phase < 0.4, phase / 0.4, (1.0 - phase) / 0.6)
    closure = np.maximum(closure, np.clip(shape, 0.0, 1.0) * ((phase >= 0) & (phase <= 1)))
    onset += duration + rng.exponential(1.0 / rate)
  return np.clip(closure * 1.15, 0.0, 1.0)


def _gaze(rng: np.random.Generator, num_frames: int, fps: float,
          bias: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
  """Eye direction (theta, phi) [T] in degrees: fixations with small saccades between them."""
  theta, phi = np.zeros(num_frames), np.zeros(num_frames)
  target = np.array(bias)
  frame = 0
  while frame < num_frames:
    hold = max(1, int(rng.uniform(0.4, 2.0) * fps))
    theta[frame:frame + hold], phi[frame:frame + hold] = target
    frame += hold
    target = np.clip(np.array(bias) + rng.normal(0.0, [7.0, 4.0]), [-20.0, -12.0], [20.0, 12.0])
  # Saccades take about two frames.
  return _smooth(theta, 0.7), _smooth(phi, 0.7)


def clip_factors(rng: np.random.Generator, speaker: Speaker, envelope: np.ndarray,
                 fps: float) -> np.ndarray:
  """The per-frame factors of one clip: float32 [T, len(FACTOR_NAMES)]."""
  num_frames = len(envelope)
  mouth = mouth_from_envelope(envelope, speaker.articulation)
  # Speech moves the head a little: nods and sways with the slow loudness.
  speaking = _smooth(envelope / (envelope.max() + 1e-9), 0.15 * fps)
  speaking -= speaking.mean()
  scale = speaker.motion_scale
  yaw = (speaker.yaw_bias + rng.uniform(-6.0, 6.0) + _drift(rng, num_frames, fps, 4.0 * scale)
         + 5.0 * scale * rng.choice([-1.0, 1.0]) * speaking)
  pitch = (speaker.pitch_bias + rng.uniform(-3.0, 3.0) + _drift(rng, num_frames, fps, 2.5 * scale)
           + 6.0 * scale * speaking)
  roll = rng.uniform(-3.0, 3.0) + _drift(rng, num_frames, fps, 2.0 * scale)
  distance = rng.uniform(0.9, 1.2) + _drift(rng, num_frames, fps, 0.015)
  tx = rng.uniform(-0.02, 0.02) + _drift(rng, num_frames, fps, 0.008 * scale)
  ty = rng.uniform(-0.02, 0.02) + _drift(rng, num_frames, fps, 0.008 * scale)
  eye_theta, eye_phi = _gaze(rng, num_frames, fps, speaker.gaze_bias)
  columns = {
      "yaw": np.clip(yaw, -_MAX_ANGLES["yaw"], _MAX_ANGLES["yaw"]),
      "pitch": np.clip(pitch, -_MAX_ANGLES["pitch"], _MAX_ANGLES["pitch"]),
      "roll": np.clip(roll, -_MAX_ANGLES["roll"], _MAX_ANGLES["roll"]),
      "distance": np.clip(distance, 0.85, 1.25),
      "tx": tx, "ty": ty,
      "mouth_open": mouth,
      "blink": _blinks(rng, num_frames, fps, speaker.blink_rate),
      "eye_theta": eye_theta, "eye_phi": eye_phi,
      # The clip's expression (`clip_expression`) is set by `make_clip`.
      "smile": np.zeros(num_frames), "brow_raise": np.zeros(num_frames),
  }
  return np.stack([columns[name] for name in render_lib.FACTOR_NAMES], axis=1).astype(np.float32)


def clip_expression(seed: int, speaker_index: int, clip_index: int,
                    expression_fraction: float) -> tuple[str, float]:
  """(expression name of EXPRESSIONS, strength in [0, 1]) of a clip: with probability
  `expression_fraction` a smile or a brow raise (equally likely), else "none". Drawn from a
  generator of its own, so the clip's other factors do not depend on the fraction."""
  rng = np.random.default_rng([seed, speaker_index, clip_index, 13])
  expressive, kind, strength = rng.uniform(), rng.integers(2), rng.uniform(*_EXPRESSION_STRENGTH)
  if expressive >= expression_fraction:
    return "none", 0.0
  return ("smile", "brow_raise")[kind], float(strength)


def expression_scores(expression: str, strength: float) -> np.ndarray:
  """Ground-truth emotion scores float32 [8] (records.EMOTION_CLASSES): `strength` on the
  expression's class, the rest on neutral."""
  scores = np.zeros(len(records.EMOTION_CLASSES), np.float32)
  scores[records.EMOTION_CLASSES.index("neutral")] = 1.0 - strength
  scores[records.EMOTION_CLASSES.index(EXPRESSIONS[expression][1])] += strength
  return scores


# ----------------------------------------------------------------------------------------------
# Clips.
# ----------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Settings:
  """What every clip of a run shares."""
  seed: int
  fps: float
  resolution: int
  min_seconds: float
  max_seconds: float
  use_espeak: bool
  jpeg_quality: int
  expression_fraction: float = 0.0  # share of clips with a smile or a brow raise



@functools.lru_cache(maxsize=8)
def _cached_speaker(seed: int, index: int) -> Speaker:
  return make_speaker(seed, index)


def make_clip(settings: Settings, speaker_index: int, clip_index: int) -> dict[str, Any]:
  """One clip record (deterministic in the settings and indices)."""
  speaker = _cached_speaker(settings.seed, speaker_index)
  rng = np.random.default_rng([settings.seed, speaker_index, clip_index, 7])
  seconds = rng.uniform(settings.min_seconds, settings.max_seconds)
  num_frames = max(1, int(round(seconds * settings.fps)))
  num_samples = int(round(num_frames / settings.fps * records.AUDIO_SAMPLE_RATE))
  audio, text = clip_audio(rng, speaker, num_samples, settings.use_espeak)
  envelope = audio_envelope(audio, num_frames, settings.fps)
  factors = clip_factors(rng, speaker, envelope, settings.fps)
  expression, strength = clip_expression(settings.seed, speaker_index, clip_index,
                                         settings.expression_fraction)
  if EXPRESSIONS[expression][0] is not None:
    factors[:, render_lib.FACTOR_NAMES.index(EXPRESSIONS[expression][0])] = strength
  images, landmarks = render_lib.render_frames(speaker.identity, factors, settings.resolution)
  column = {name: factors[:, i] for i, name in enumerate(render_lib.FACTOR_NAMES)}
  half = settings.resolution / 2
  annotations = {
      "landmarks": landmarks,
      "head_pose": np.stack([column["yaw"], column["pitch"], column["roll"]], axis=1),
      "gaze": render_lib.camera_gaze(factors),
      "distance": np.ascontiguousarray(column["distance"]),
      "crop_box": np.tile(np.array([half, half, settings.resolution], np.float32),
                          (num_frames, 1)),
      "face_found": np.ones(num_frames, bool),
      "emotion": np.tile(expression_scores(expression, strength), (num_frames, 1)),
      "emotion_available": True,
  }
  return {
      "format_version": records.RECORD_FORMAT_VERSION,
      "clip_id": f"{speaker.speaker_id}/{clip_index:05d}",
      "speaker_id": speaker.speaker_id,
      "source": "synthtalk",
      "source_path": "",
      "fps": float(settings.fps),
      "resolution": int(settings.resolution),
      "frames": [media.encode_jpeg(image, settings.jpeg_quality) for image in images],
      "audio": audio,
      "audio_sample_rate": records.AUDIO_SAMPLE_RATE,
      "annotations": annotations,
      "ground_truth": {
          "identity": speaker.identity.to_array(),
          "factors": factors,
          "factor_names": list(render_lib.FACTOR_NAMES),
          "audio_kind": "espeak-ng" if settings.use_espeak else "synthetic",
          "audio_envelope": envelope,
          "mouth_lead_frames": _MOUTH_LEAD_FRAMES,
          "text": text,
          "voice": speaker.voice if settings.use_espeak else "",
          "expression": expression,
      },
  }


def _encoded_clip(task: tuple[Settings, int, int]) -> tuple[list[bytes], dict[str, Any]]:
  """Worker: (settings, speaker, clip) -> (the clip's shard entries, manifest entry)."""
  record = make_clip(*task)
  entry = {"clip_id": record["clip_id"], "speaker_id": record["speaker_id"],
           "num_frames": len(record["frames"])}
  return records.encode_clip(record), entry


# ----------------------------------------------------------------------------------------------
# The data set.
# ----------------------------------------------------------------------------------------------
def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(prog="python -m data_prep.synthtalk", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--output_dir", required=True)
  parser.add_argument("--num_speakers", type=int, default=20)
  parser.add_argument("--clips_per_speaker", type=int, default=10)
  parser.add_argument("--resolution", type=int, default=128)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--fps", type=float, default=25.0)
  parser.add_argument("--min_seconds", type=float, default=2.0)
  parser.add_argument("--max_seconds", type=float, default=4.0)
  parser.add_argument("--test_fraction", type=float, default=0.1,
                      help="fraction of speakers in the test split (at least one if >= 2 "
                      "speakers and > 0)")
  parser.add_argument("--num_workers", type=int, default=2)
  parser.add_argument("--clips_per_shard", type=int, default=256)
  parser.add_argument("--jpeg_quality", type=int, default=90)
  parser.add_argument("--expression_fraction", type=float, default=0.0,
                      help="share of clips with an expression (a smile or raised brows, equally "
                      "likely), stored as their emotion scores; the rest are neutral")
  args = parser.parse_args(argv)
  if args.num_speakers < 1 or args.clips_per_speaker < 1:
    parser.error("--num_speakers and --clips_per_speaker must be >= 1")
  if not 0 < args.min_seconds <= args.max_seconds:
    parser.error("need 0 < --min_seconds <= --max_seconds")
  if not 0 <= args.test_fraction < 1:
    parser.error("--test_fraction must be in [0, 1)")
  if not 0 <= args.expression_fraction <= 1:
    parser.error("--expression_fraction must be in [0, 1]")
  if args.resolution < 16 or args.clips_per_shard < 1 or args.num_workers < 1:
    parser.error("need --resolution >= 16, --clips_per_shard >= 1, --num_workers >= 1")
  return args


def _clip_stream(tasks: list[tuple[Settings, int, int]],
                 num_workers: int) -> Iterator[tuple[list[bytes], dict[str, Any]]]:
  """Encoded clips in task order, made by `num_workers` processes (or in this one)."""
  if num_workers == 1:
    yield from map(_encoded_clip, tasks)
    return
  # Spawned workers: the parent may hold threads (JAX) that forking would copy mid-flight.
  with multiprocessing.get_context("spawn").Pool(num_workers) as pool:
    yield from pool.imap(_encoded_clip, tasks, chunksize=1)


def generate(args: argparse.Namespace) -> str:
  """Writes the data set; returns the manifest's path."""
  use_espeak = espeak_available()
  if not use_espeak:
    logger.warning("%s is not installed: SynthTalk clips get synthetic pseudo-speech instead "
                   "(ground_truth['audio_kind'] = 'synthetic')", ESPEAK)
  settings = Settings(seed=args.seed, fps=args.fps, resolution=args.resolution,
                      min_seconds=args.min_seconds, max_seconds=args.max_seconds,
                      use_espeak=use_espeak, jpeg_quality=args.jpeg_quality,
                      expression_fraction=args.expression_fraction)
  os.makedirs(args.output_dir, exist_ok=True)
  speakers = split_speakers(args.num_speakers, args.test_fraction, args.seed)
  tasks = {split: [(settings, speaker, clip) for speaker in speakers[split]
                   for clip in range(args.clips_per_speaker)] for split in SPLITS}
  stream = _clip_stream(tasks["train"] + tasks["test"], args.num_workers)
  progress = tqdm(total=len(tasks["train"]) + len(tasks["test"]), desc="synthtalk", unit="clip")
  splits = {}
  for split in SPLITS:
    count = len(tasks[split])
    num_shards = math.ceil(count / args.clips_per_shard)
    shards, clips = [], []
    for shard in range(num_shards):
      size = min(args.clips_per_shard, count - shard * args.clips_per_shard)

      def shard_records(size=size):
        for _ in range(size):
          entries, clip = next(stream)
          clips.append(clip)
          progress.update(1)
          yield from entries

      name = records.shard_name(split, shard, num_shards)
      records.write_shard(os.path.join(args.output_dir, name), shard_records())
      shards.append(name)
    splits[split] = {"shards": shards, "clips": clips}
  progress.close()
  stream.close()
  settings_record = dict(vars(args), audio_kind="espeak-ng" if use_espeak else "synthetic",
                         factor_names=list(render_lib.FACTOR_NAMES),
                         identity_fields=render_lib.Identity.field_sizes())
  return records.write_manifest(args.output_dir, {
      "source": "synthtalk",
      "resolution": args.resolution,
      "fps": args.fps,
      "audio_sample_rate": records.AUDIO_SAMPLE_RATE,
      "splits": splits,
      "num_inputs": len(tasks["train"]) + len(tasks["test"]),
      "skipped": {},
      "skipped_examples": {},
      "settings": settings_record,
  })


def main(argv: Sequence[str] | None = None) -> str:
  logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
  return generate(_parse_args(argv))


if __name__ == "__main__":
  main()
