"""MFCCs exactly as `python_speech_features.mfcc(signal, 16000)` (version 0.6) computes them.

SyncNet's audio branch was trained on these features, so they are reproduced step by step with
that function's defaults: pre-emphasis 0.97; 25 ms frames every 10 ms (400 / 160 samples at 16
kHz), the last frame zero-padded, no window function; power spectrum |rfft_512|^2 / 512; 26
triangular mel filters on FFT bins floor(513 * mel2hz(m) / 16000) for mels evenly spaced from 0 Hz
to 8 kHz; log (zeros replaced by float eps); orthonormal DCT-II, first 13 coefficients; sinusoidal
lifter 1 + 11 sin(pi n / 22); coefficient 0 replaced by the log of the frame's total spectral
energy. syncnet_python feeds the int16 samples of a 16 kHz wav, so the scale matters (the energy
term): pass int16 values (`int16_samples` converts float audio in [-1, 1] as ffmpeg does).
"""

from __future__ import annotations

import functools
import math

import numpy as np

SAMPLE_RATE = 16_000
FRAME_SAMPLES = 400  # 25 ms
STEP_SAMPLES = 160  # 10 ms: MFCC frames per second = 100
FFT_SIZE = 512
NUM_FILTERS = 26
NUM_COEFFICIENTS = 13
PREEMPHASIS = 0.97
LIFTER = 22


def int16_samples(audio: np.ndarray) -> np.ndarray:
  """Float audio in [-1, 1] -> int16 as ffmpeg's pcm_s16le encoder writes it (x * 32768,
  rounded, saturated)."""
  scaled = np.round(np.asarray(audio, np.float64) * 32768.0)
  return np.clip(scaled, -32768, 32767).astype(np.int16)


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
  return 2595.0 * np.log10(1.0 + hz / 700.0)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
  return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


@functools.lru_cache(maxsize=None)
def mel_filterbank(sample_rate: int = SAMPLE_RATE) -> np.ndarray:
  """[NUM_FILTERS, FFT_SIZE // 2 + 1] triangular filters on integer FFT bins."""
  mels = np.linspace(_hz_to_mel(0.0), _hz_to_mel(sample_rate / 2), NUM_FILTERS + 2)
  bins = np.floor((FFT_SIZE + 1) * _mel_to_hz(mels) / sample_rate)
  filters = np.zeros([NUM_FILTERS, FFT_SIZE // 2 + 1])
  for j in range(NUM_FILTERS):
    low, centre, high = bins[j], bins[j + 1], bins[j + 2]
    rising = np.arange(int(low), int(centre))
    filters[j, rising] = (rising - low) / (centre - low)
    falling = np.arange(int(centre), int(high))
    filters[j, falling] = (high - falling) / (high - centre)
  return filters


@functools.lru_cache(maxsize=None)
def _dct_matrix() -> np.ndarray:
  """[NUM_FILTERS, NUM_COEFFICIENTS] orthonormal DCT-II (scipy's `dct(norm='ortho')`)."""
  n = np.arange(NUM_FILTERS)[:, None]
  k = np.arange(NUM_COEFFICIENTS)[None, :]
  matrix = np.sqrt(2.0 / NUM_FILTERS) * np.cos(np.pi * k * (2 * n + 1) / (2 * NUM_FILTERS))
  matrix[:, 0] /= np.sqrt(2.0)
  return matrix


def num_mfcc_frames(num_samples: int) -> int:
  """Frames `mfcc` returns for `num_samples` samples (at least one)."""
  if num_samples <= FRAME_SAMPLES:
    return 1
  return 1 + math.ceil((num_samples - FRAME_SAMPLES) / STEP_SAMPLES)


def mfcc(signal: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
  """float64 [num_mfcc_frames(N), 13] MFCCs of a mono signal [N] (int16 values for SyncNet)."""
  signal = np.asarray(signal)
  if signal.ndim != 1 or not len(signal):
    raise ValueError(f"signal must be a non-empty 1-D array, got shape {signal.shape}")
  if sample_rate != SAMPLE_RATE:
    raise ValueError(f"the frame and filter sizes are those of {SAMPLE_RATE} Hz audio, "
                     f"got {sample_rate} Hz")
  emphasised = np.append(signal[0], signal[1:] - PREEMPHASIS * signal[:-1]).astype(np.float64)
  num_frames = num_mfcc_frames(len(emphasised))
  padded_length = (num_frames - 1) * STEP_SAMPLES + FRAME_SAMPLES
  emphasised = np.concatenate([emphasised, np.zeros(padded_length - len(emphasised))])
  starts = np.arange(num_frames) * STEP_SAMPLES
  frames = emphasised[starts[:, None] + np.arange(FRAME_SAMPLES)[None, :]]  # [F, 400]
  power = np.square(np.abs(np.fft.rfft(frames, FFT_SIZE))) / FFT_SIZE  # [F, 257]
  energy = power.sum(axis=1)
  energy = np.where(energy == 0, np.finfo(float).eps, energy)
  filtered = power @ mel_filterbank(sample_rate).T  # [F, 26]
  filtered = np.where(filtered == 0, np.finfo(float).eps, filtered)
  cepstra = np.log(filtered) @ _dct_matrix()  # [F, 13]
  cepstra *= 1.0 + (LIFTER / 2.0) * np.sin(np.pi * np.arange(NUM_COEFFICIENTS) / LIFTER)
  cepstra[:, 0] = np.log(energy)
  return cepstra
