r"""Scores generated talking-face videos with the field's metrics (VASA-1's Table 1 and peers').

  python -m vasa_jax.evaluate --generated=PATH [--reference=PATH] [--audio=PATH] \
      [--source_image=PATH] --output=results.json \
      [--metrics=sync,capp,pose,fvd,fid,csim,gaze,lmd,lip] [--syncnet=FILE [--syncnet_width=W]] \
      [--i3d=FILE] [--inception=FILE] [--arcface=FILE [--arcface_depth=100]] \
      [--controls=FILE.json] [--capp_checkpoint=DIR] [--face_cropped]

PATH is an mp4 or a folder of them. --reference videos pair with the generated ones by file name;
--audio and --source_image are a file (for one generated clip; a photo may serve every clip) or
a folder of files named like the clips (any extension). Without --audio, the audio track of the
generated mp4 is used. Videos are read at 25 fps.

Metrics (docs/evaluation.md gives each formula and the reference implementation it matches):
  sync  SyncNet Sc / SD / offset (LSE-C / LSE-D), as syncnet_python (needs --syncnet); the face
        crop is syncnet_python's, from this project's tracker, unless --face_cropped says the
        video is already a 25 fps face crop;
  capp  VASA-1's audio-pose score: not available yet (its encoders are still to be trained);
  pose  Delta P, the mean frame-to-frame head-angle change (degrees), from the tracker;
  fvd   FVD25 against the reference videos (needs --i3d and --reference);
  fid   FID against the reference frames (needs --inception and --reference);
  csim  ArcFace cosine to the source photo (needs --arcface and --source_image);
  gaze  E_g and E_d: the tracker's gaze and head distance against the requested controls
        (--controls: {"*": {"gaze": [theta, phi], "distance": d}, "<clip>": {...}});
  lmd   mouth landmark distance to the reference video (needs --reference);
  lip   the mouth-opening vs speech-envelope correlation (`vasa_jax.evaluators.lip_sync`).
A metric whose weights are absent is left out with a note naming the file and the converter
command. Clips that cannot be read, have no face, or are too short for a metric are listed with
the reason and counted; the others are still scored. The table (VASA-1 Table 1's columns, then
the others) is printed and the JSON (per clip, overall, counts, notes, skipped) written.
Bad input exits with status 1 and a one-line `error: ...`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any, Optional, Sequence

import numpy as np
from PIL import Image

from vasa_jax.data import media
from vasa_jax.evaluators import frechet
from vasa_jax.evaluators import identity
from vasa_jax.evaluators import landmarks as landmarks_lib
from vasa_jax.evaluators import lip_sync
from vasa_jax.evaluators import mfcc
from vasa_jax.evaluators import motion
from vasa_jax.evaluators import report
from vasa_jax.evaluators import syncnet as sync_lib
from vasa_jax.evaluators import tracking
from vasa_jax.models import iresnet
from vasa_jax.models import pretrained
from vasa_jax.models import syncnet as syncnet_model

METRICS = ("sync", "capp", "pose", "fvd", "fid", "csim", "gaze", "lmd", "lip")
VIDEO_EXTENSIONS = (".mp4", ".mov", ".mkv", ".avi", ".webm")
FPS = 25.0
SAMPLE_RATE = 16_000
# The converter command for each network's weights.
CONVERT = "python -m data_prep.convert_weights --kind={kind} --input={source} --output={output}"
WEIGHTS = {
    "sync": ("syncnet", "syncnet", "syncnet_v2.model", "syncnet.npz"),
    "fvd": ("i3d", "i3d", "i3d_torchscript.pt", "i3d.npz"),
    "fid": ("inception", "inception", "pt_inception-2015-12-05-6726825d.pth", "inception.npz"),
    "csim": ("arcface", "iresnet100", "backbone.pth", "arcface_r100.npz"),
}


class EvaluationError(Exception):
  """Bad command-line input: reported as one line, exit status 1."""


def find_videos(path: str, flag: str) -> dict[str, str]:
  """{file name without extension: path} of an mp4 (or other video) or a folder of them."""
  if os.path.isfile(path):
    return {os.path.splitext(os.path.basename(path))[0]: path}
  if not os.path.isdir(path):
    raise EvaluationError(f"{flag} {path!r} does not exist")
  videos = {os.path.splitext(name)[0]: os.path.join(path, name) for name in sorted(os.listdir(path))
            if os.path.splitext(name)[1].lower() in VIDEO_EXTENSIONS}
  if not videos:
    raise EvaluationError(f"{flag} {path!r} holds no video files ({', '.join(VIDEO_EXTENSIONS)})")
  return videos


def match_files(path: Optional[str], names: Sequence[str], flag: str,
                one_for_all: bool) -> dict[str, str]:
  """{clip name: file} from a file (one clip, or every clip if `one_for_all`) or a folder of
  files named like the clips (any extension)."""
  if path is None:
    return {}
  if os.path.isfile(path):
    if len(names) > 1 and not one_for_all:
      raise EvaluationError(f"{flag} is one file but there are {len(names)} generated clips; "
                            "give a folder of files named like the clips")
    return {name: path for name in names}
  if not os.path.isdir(path):
    raise EvaluationError(f"{flag} {path!r} does not exist")
  files = {os.path.splitext(name)[0]: os.path.join(path, name) for name in sorted(os.listdir(path))}
  return {name: files[name] for name in names if name in files}


def weights_note(metric: str, path: Optional[str]) -> str:
  flag, kind, source, output = WEIGHTS[metric]
  missing = f"--{flag} not given" if path is None else f"weight file {path!r} not found"
  command = CONVERT.format(kind=kind, source=source, output=path or output)
  return f"{metric} left out: {missing}; convert the released {source} with `{command}`"


class Evaluator:
  """Holds the networks and the results while the clips are scored one by one."""

  def __init__(self, args: argparse.Namespace, metrics: Sequence[str]):
    self.args, self.metrics = args, list(metrics)
    self.notes: list[str] = []
    self.skipped: list[dict[str, str]] = []
    self.per_clip: dict[str, dict[str, float]] = {}
    self.features: dict[str, dict[str, list[np.ndarray]]] = {
        "fvd": {"generated": [], "reference": []}, "fid": {"generated": [], "reference": []}}
    self.set_counts: dict[str, dict[str, int]] = {}  # FVD25 / FID feature vectors per set
    self.tracker = tracking.make_tracker()
    self.controls = self._read_controls(args.controls)
    self.networks = self._load_networks()

  # Set-up -------------------------------------------------------------------------------------

  def _read_controls(self, path: Optional[str]) -> dict[str, Any]:
    if path is None:
      return {}
    try:
      with open(path, encoding="utf-8") as file:
        controls = json.load(file)
    except (OSError, json.JSONDecodeError) as e:
      raise EvaluationError(f"--controls {path!r} is not a readable JSON file ({e})") from e
    if not isinstance(controls, dict):
      raise EvaluationError(f"--controls {path!r} must hold an object of clip name -> controls")
    return controls

  def _weights(self, metric: str, path: Optional[str]) -> Optional[str]:
    """The weight file for `metric`, or None after a note saying what is missing."""
    if metric not in self.metrics:
      return None
    if path is None or not os.path.isfile(path):
      self.notes.append(weights_note(metric, path))
      self.metrics.remove(metric)
      return None
    return path

  def _load_networks(self) -> dict[str, Any]:
    args, networks = self.args, {}
    try:
      if path := self._weights("sync", args.syncnet):
        model = syncnet_model.SyncNet(width=args.syncnet_width)
        networks["sync"] = sync_lib.SyncNetScorer(
            pretrained.load_syncnet(path, width=args.syncnet_width), model)
      if path := self._weights("fvd", args.i3d):
        networks["fvd"] = frechet.i3d_features(pretrained.load_i3d(path))
      if path := self._weights("fid", args.inception):
        networks["fid"] = frechet.inception_features(pretrained.load_inception(path))
      if path := self._weights("csim", args.arcface):
        networks["csim"] = identity.ArcFaceEmbedder(
            pretrained.load_iresnet(path, args.arcface_depth), iresnet.iresnet(args.arcface_depth))
    except ValueError as e:  # a weight file of another network
      raise EvaluationError(str(e)) from e
    if "capp" in self.metrics:
      detail = f" (--capp_checkpoint {args.capp_checkpoint!r} is not used)" if (
          args.capp_checkpoint) else ""
      self.notes.append("capp left out: CAPP is not available yet (its audio and pose encoders "
                        f"are still to be trained; issue 23 item 2){detail}")
      self.metrics.remove("capp")
    return networks

  # Scoring ------------------------------------------------------------------------------------

  def skip(self, clip: str, metric: str, reason: str) -> None:
    self.skipped.append({"clip": clip, "metric": metric, "reason": reason})

  def needs(self, *metrics: str) -> bool:
    return any(metric in self.metrics for metric in metrics)

  def evaluate_clip(self, name: str, path: str, reference: Optional[str], audio_path: Optional[str],
                    source_image: Optional[str]) -> None:
    values: dict[str, float] = {}
    self.per_clip[name] = values
    try:
      clip = media.read_video(path, fps=FPS)
    except media.MediaError as e:
      self.skip(name, "all", f"unreadable: {e}")
      return
    frames = clip.frames
    waveform = None
    if self.needs("sync", "lip"):
      try:
        waveform = (media.read_audio(audio_path, SAMPLE_RATE) if audio_path else
                    media.read_audio(path, SAMPLE_RATE, start_time=clip.start_time))
      except media.MediaError as e:
        for metric in ("sync", "lip"):
          if metric in self.metrics:
            self.skip(name, metric, f"no audio: {e}")
    track = None
    if self.needs("pose", "gaze", "lmd", "csim", "lip") or (
        "sync" in self.metrics and not self.args.face_cropped):
      track = tracking.track(frames, FPS, self.tracker)
      if track.skip_reason is not None:
        for metric in ("sync", "pose", "gaze", "lmd", "csim", "lip"):
          if metric in self.metrics and not (metric == "sync" and self.args.face_cropped):
            self.skip(name, metric, f"face tracker: {track.skip_reason}")
        track = None
    if "sync" in self.metrics and waveform is not None and (track or self.args.face_cropped):
      self._sync(name, frames, waveform, track, values)
    if "lip" in self.metrics and waveform is not None and track:
      scores = lip_sync.lip_sync_scores(track.mouth(), waveform, FPS, sample_rate=SAMPLE_RATE)
      values["mouth_envelope_correlation"] = scores["mouth_envelope_correlation"]
    if "pose" in self.metrics and track:
      values["delta_pose"] = motion.delta_pose(track.head_pose, track.found)
    if "gaze" in self.metrics and track:
      self._controls(name, track, values)
    if "csim" in self.metrics and track:
      self._csim(name, frames, track, source_image, values)
    reference_frames = None
    if self.needs("lmd", "fvd", "fid"):
      reference_frames = self._reference(name, reference)
    if "lmd" in self.metrics and track and reference_frames is not None:
      reference_track = tracking.track(reference_frames, FPS, self.tracker)
      if reference_track.skip_reason is not None:
        self.skip(name, "lmd", f"reference video: face tracker: {reference_track.skip_reason}")
      else:
        values["lmd"] = landmarks_lib.lmd(
            track.landmarks, track.found, reference_track.landmarks, reference_track.found,
            min(reference_frames.shape[1:3]))
    self._set_features(name, frames, reference_frames)
    for key, value in list(values.items()):
      if not np.isfinite(value):
        self.skip(name, key, "not measurable (too few frames with a face, or no variation)")
        del values[key]

  def _sync(self, name: str, frames: np.ndarray, waveform: np.ndarray,
            track: Optional[tracking.TrackedClip], values: dict[str, float]) -> None:
    if self.args.face_cropped:
      crops = sync_lib.prepare_crops(frames, face_cropped=True)
    else:
      crops = sync_lib.crop_faces(frames, track.found, track.landmarks)
    audio = sync_lib.clip_audio(mfcc.int16_samples(waveform), crops.first, crops.last)
    if sync_lib.num_windows(len(crops.crops), len(audio)) < 1:
      self.skip(name, "sync", f"too short: {len(crops.crops)} frames with audio, SyncNet needs "
                f"at least {sync_lib.MIN_FRAMES}")
      return
    scores = self.networks["sync"].score(crops.crops, audio)
    values.update(sync_confidence=scores.confidence, sync_distance=scores.distance,
                  sync_offset=float(scores.offset))

  def _controls(self, name: str, track: tracking.TrackedClip, values: dict[str, float]) -> None:
    requested = self.controls.get(name, self.controls.get("*"))
    if not isinstance(requested, dict) or not ({"gaze", "distance"} & set(requested)):
      self.skip(name, "gaze", "no requested gaze or distance for this clip in --controls")
      return
    if "gaze" in requested:
      values["gaze_error"] = motion.gaze_error(track.gaze, track.found, requested["gaze"])
    if "distance" in requested:
      values["distance_error"] = motion.distance_error(track.distance, track.found,
                                                       requested["distance"])

  def _csim(self, name: str, frames: np.ndarray, track: tracking.TrackedClip,
            source_image: Optional[str], values: dict[str, float]) -> None:
    if source_image is None:
      self.skip(name, "csim", "no source photo (--source_image)")
      return
    try:
      with Image.open(source_image) as image:
        photo = np.asarray(image.convert("RGB"))
    except OSError as e:
      self.skip(name, "csim", f"unreadable source photo {source_image!r}: {e}")
      return
    source_track = tracking.track(photo[None], 1.0, self.tracker)
    if source_track.skip_reason is not None:
      self.skip(name, "csim", f"source photo: face tracker: {source_track.skip_reason}")
      return
    values["csim"] = identity.csim(self.networks["csim"], photo, source_track.landmarks[0],
                                   frames, track.landmarks, track.found)

  def _reference(self, name: str, reference: Optional[str]) -> Optional[np.ndarray]:
    if reference is None:
      for metric in ("lmd", "fvd", "fid"):
        if metric in self.metrics:
          self.skip(name, metric, "no reference video with this name")
      return None
    try:
      return media.read_video(reference, fps=FPS).frames
    except media.MediaError as e:
      for metric in ("lmd", "fvd", "fid"):
        if metric in self.metrics:
          self.skip(name, metric, f"unreadable reference: {e}")
      return None

  def _set_features(self, name: str, frames: np.ndarray,
                    reference_frames: Optional[np.ndarray]) -> None:
    """I3D / Inception features of the clip and its reference, for FVD25 / FID."""
    if reference_frames is None:
      return
    videos = {"generated": frames, "reference": reference_frames}
    if "fvd" in self.metrics:
      if min(len(frames), len(reference_frames)) < frechet.FVD_CLIP_FRAMES:
        self.skip(name, "fvd", f"too short: FVD25 needs {frechet.FVD_CLIP_FRAMES} frames "
                  f"(generated {len(frames)}, reference {len(reference_frames)})")
      else:
        for side, video in videos.items():
          self.features["fvd"][side].append(self.networks["fvd"](frechet.fvd_clips(video)))
    if "fid" in self.metrics:
      for side, video in videos.items():
        images = frechet.evenly_spaced(video, frechet.FID_FRAMES_PER_VIDEO)
        images = images.astype(np.float32) / 255.0
        self.features["fid"][side].append(self.networks["fid"](images))

  def set_values(self) -> dict[str, float]:
    """FVD25 and FID over all scored clips (each set needs at least 2 feature vectors)."""
    values = {}
    for metric, key, function, unit in (("fvd", "fvd25", frechet.fvd, "25-frame clips"),
                                        ("fid", "fid", frechet.fid, "frames")):
      if metric not in self.metrics:
        continue
      sets = {side: np.concatenate(features) if features else np.zeros((0, 1))
              for side, features in self.features[metric].items()}
      self.set_counts[key] = {side: len(features) for side, features in sets.items()}
      if min(self.set_counts[key].values()) < 2:
        self.notes.append(
            f"{key} left out: it needs at least 2 {unit} in each set, got "
            f"{self.set_counts[key]['generated']} generated and "
            f"{self.set_counts[key]['reference']} reference")
        continue
      values[key] = function(sets["generated"], sets["reference"])
    return values


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog="python -m vasa_jax.evaluate", description=__doc__.split("\n\n")[0],
      formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--generated", required=True, help="mp4 or folder of mp4s to score")
  parser.add_argument("--reference", help="real video(s), paired by file name")
  parser.add_argument("--audio", help="speech file or folder (default: the mp4's audio)")
  parser.add_argument("--source_image", help="source photo file or folder (for csim)")
  parser.add_argument("--output", required=True, help="the results .json to write")
  parser.add_argument("--metrics", default=",".join(METRICS), help="comma list of metrics")
  parser.add_argument("--syncnet", help="converted SyncNet weights (.npz)")
  parser.add_argument("--syncnet_width", type=float, default=1.0,
                      help="channel width of the SyncNet weights (1.0: syncnet_v2.model)")
  parser.add_argument("--i3d", help="converted I3D weights (.npz)")
  parser.add_argument("--inception", help="converted FID InceptionV3 weights (.npz)")
  parser.add_argument("--arcface", help="converted ArcFace IResNet weights (.npz)")
  parser.add_argument("--arcface_depth", type=int, default=100, help="IResNet depth")
  parser.add_argument("--controls", help="JSON of requested gaze / distance (for gaze)")
  parser.add_argument("--capp_checkpoint", help="CAPP checkpoint (not available yet)")
  parser.add_argument("--face_cropped", action="store_true",
                      help="the videos are 25 fps face crops already (SyncNet input)")
  return parser


def evaluate(args: argparse.Namespace) -> dict[str, Any]:
  """Scores the clips of `args` and returns the results (see the module docstring)."""
  metrics = [metric.strip() for metric in args.metrics.split(",") if metric.strip()]
  unknown = sorted(set(metrics) - set(METRICS))
  if unknown or not metrics:
    raise EvaluationError(f"--metrics {args.metrics!r}: unknown {unknown}; known: "
                          f"{','.join(METRICS)}")
  if not args.output.endswith(".json"):
    raise EvaluationError(f"--output {args.output!r} must end in .json")
  generated = find_videos(args.generated, "--generated")
  names = list(generated)
  references = find_videos(args.reference, "--reference") if args.reference else {}
  audio = match_files(args.audio, names, "--audio", one_for_all=False)
  photos = match_files(args.source_image, names, "--source_image", one_for_all=True)
  evaluator = Evaluator(args, metrics)
  start = time.perf_counter()
  for name, path in generated.items():
    evaluator.evaluate_clip(name, path, references.get(name), audio.get(name), photos.get(name))
  set_values = evaluator.set_values()
  overall, counts = report.overall(evaluator.per_clip, set_values)
  seconds = time.perf_counter() - start
  return {"overall": overall, "clips": evaluator.per_clip,
          "counts": {"clips": len(names), "scored": counts, "set_features": evaluator.set_counts,
                     "skipped": len(evaluator.skipped)},
          "notes": evaluator.notes, "skipped": evaluator.skipped,
          "metrics": evaluator.metrics,
          "settings": {"fps": FPS, "face_cropped": args.face_cropped,
                       "syncnet_width": args.syncnet_width, "seconds": seconds}}


def main(argv: Optional[Sequence[str]] = None) -> int:
  args = _parser().parse_args(argv)
  try:
    results = evaluate(args)
    directory = os.path.dirname(os.path.abspath(args.output))
    os.makedirs(directory, exist_ok=True)
    with open(args.output, "w", encoding="utf-8") as file:
      json.dump(results, file, indent=2)
  except (EvaluationError, OSError) as error:
    print(f"error: {error}", file=sys.stderr)
    return 1
  print(report.table(results["overall"]))
  problems = report.problems_text(results["notes"], results["skipped"])
  if problems:
    print(problems)
  print(f"scored {results['counts']['clips']} clip(s) in {results['settings']['seconds']:.1f} s; "
        f"{results['counts']['skipped']} skipped metric(s); wrote {args.output}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
