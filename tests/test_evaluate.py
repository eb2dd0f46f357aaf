"""`python -m vasa_jax.evaluate`: every metric on SynthTalk videos, the --face_cropped SyncNet
scores against syncnet_python re-created in PyTorch, missing weights, bad clips, bad input."""

import functools
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from data_prep import convert_weights
from tests import test_perceptual
from tests import torch_syncnet
from tests import torch_video_nets
from vasa_jax import evaluate
from vasa_jax.data import extract_motion
from vasa_jax.data import media
from vasa_jax.data.synthtalk import dataset as synthtalk
from vasa_jax.evaluators import frechet
from vasa_jax.evaluators import identity
from vasa_jax.evaluators import mfcc
from vasa_jax.evaluators import syncnet as sync_eval
from vasa_jax.evaluators import tracking
from vasa_jax.models import i3d
from vasa_jax.models import iresnet
from vasa_jax.models import pretrained

SYNCNET_WIDTH = 0.125
I3D_WIDTH = 0.125


def write_clip(path, frames, audio_int16):
  media.write_video(str(path), frames, 25.0, audio=audio_int16.astype(np.float32) / 32768.0)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
  """Two SynthTalk clips as reference mp4s and, as generated mp4s, clip a itself and clip b
  frozen on its first frame (with its speech); first frames as source photos; gaze / distance
  controls; small random weight files."""
  root = tmp_path_factory.mktemp("evaluate")
  for folder in ("generated", "reference", "photos"):
    (root / folder).mkdir()
  settings = synthtalk.Settings(seed=5, fps=25.0, resolution=128, min_seconds=1.2,
                                max_seconds=1.2, use_espeak=False, jpeg_quality=95)
  truth, measured = {}, {}
  for name, speaker in (("a", 1), ("b", 2)):
    record = synthtalk.make_clip(settings, speaker_index=speaker, clip_index=0)
    frames = np.stack([media.decode_jpeg(frame) for frame in record["frames"]])
    write_clip(root / "reference" / f"{name}.mp4", frames, record["audio"])
    generated = frames if name == "a" else np.repeat(frames[:1], len(frames), axis=0)
    write_clip(root / "generated" / f"{name}.mp4", generated, record["audio"])
    Image.fromarray(frames[0]).save(root / "photos" / f"{name}.png")
    truth[name] = record["annotations"]
    decoded = media.read_video(str(root / "generated" / f"{name}.mp4"), fps=25.0).frames
    measured[name] = tracking.track(decoded, 25.0)
  # Clip a asks for the gaze and distance the tracker measures on it (as stage-2 data defines the
  # controls), clip b (through "*") for a gaze 20 degrees off its own.
  found = measured["a"].found
  controls = {"a": {"gaze": extract_motion.main_gaze_direction(measured["a"].gaze[found]).tolist(),
                    "distance": float(np.median(measured["a"].distance[found]))},
              "*": {"gaze": (extract_motion.main_gaze_direction(
                  measured["b"].gaze[measured["b"].found]) + [12.0, -16.0]).tolist()}}
  (root / "controls.json").write_text(json.dumps(controls))

  torch.manual_seed(0)
  weights = {}
  networks = {"syncnet": torch_syncnet.TorchSyncNet(width=SYNCNET_WIDTH),
              "i3d": torch_video_nets.TorchI3D(width=I3D_WIDTH),
              "inception": torch_video_nets.TorchFIDInception(),
              "arcface": test_perceptual.TorchIResNet(iresnet.STAGE_BLOCKS[18])}
  flax_models = {"syncnet": evaluate.syncnet_model.SyncNet(width=SYNCNET_WIDTH),
                 "i3d": i3d.I3D(width=I3D_WIDTH), "inception": pretrained.MODEL_KINDS["inception"],
                 "arcface": iresnet.iresnet(18)}
  for kind, network in networks.items():
    torch.save(torch_syncnet.randomised(network).state_dict(), root / f"{kind}.pth")
    weights[kind] = str(root / f"{kind}.npz")
    convert_weights.convert(str(root / f"{kind}.pth"), weights[kind], flax_models[kind])
  return root, weights, truth


def test_every_metric_on_synthtalk_clips(workspace, monkeypatch, capsys):
  root, weights, truth = workspace
  # Small networks and few frames keep the test fast; the code path is the command line's.
  monkeypatch.setattr(evaluate.pretrained, "load_i3d",
                      functools.partial(pretrained.load_i3d, width=I3D_WIDTH))
  monkeypatch.setattr(evaluate.frechet, "i3d_features",
                      functools.partial(frechet.i3d_features, model=i3d.I3D(width=I3D_WIDTH),
                                        batch_size=1))
  monkeypatch.setattr(evaluate.sync_lib, "SyncNetScorer",
                      functools.partial(sync_eval.SyncNetScorer, batch_size=25))
  monkeypatch.setattr(evaluate.frechet, "inception_features",
                      functools.partial(frechet.inception_features, batch_size=3))
  monkeypatch.setattr(frechet, "FID_FRAMES_PER_VIDEO", 3)
  monkeypatch.setattr(evaluate.identity, "ArcFaceEmbedder",
                      functools.partial(identity.ArcFaceEmbedder, batch_size=5))
  monkeypatch.setattr(identity, "MAX_FRAMES", 4)
  output = root / "results.json"
  status = evaluate.main([
      f"--generated={root / 'generated'}", f"--reference={root / 'reference'}",
      f"--source_image={root / 'photos'}", f"--output={output}",
      f"--syncnet={weights['syncnet']}", f"--syncnet_width={SYNCNET_WIDTH}",
      f"--i3d={weights['i3d']}", f"--inception={weights['inception']}",
      f"--arcface={weights['arcface']}", "--arcface_depth=18",
      f"--controls={root / 'controls.json'}", "--capp_checkpoint=/tmp/capp"])
  assert status == 0
  printed = capsys.readouterr().out
  results = json.loads(output.read_text())
  clip_keys = {"sync_confidence", "sync_distance", "sync_offset", "delta_pose", "csim",
               "gaze_error", "lmd", "mouth_envelope_correlation"}
  assert clip_keys <= set(results["clips"]["a"])
  assert "distance_error" in results["clips"]["a"]
  assert "distance_error" not in results["clips"]["b"]  # "*" requests a gaze only
  assert clip_keys | {"fvd25", "fid", "distance_error"} <= set(results["overall"])
  assert "capp" not in results["overall"] and "capp" not in results["clips"]["a"]
  assert any("CAPP is not available yet" in note for note in results["notes"])
  assert results["counts"]["clips"] == 2 and results["counts"]["scored"]["lmd"] == 2
  assert results["counts"]["set_features"] == {"fvd25": {"generated": 2, "reference": 2},
                                               "fid": {"generated": 6, "reference": 6}}
  assert results["skipped"] == []
  # The frozen clip's mouth does not follow its speech (H.264 leaves it a little jitter).
  assert results["clips"]["a"]["mouth_envelope_correlation"] > 0.5
  assert results["clips"]["b"]["mouth_envelope_correlation"] < 0.3
  # Clip a is its reference: LMD ~0; the frozen clip b is far from its talking reference.
  assert results["clips"]["a"]["lmd"] < 0.1 < 1.0 < results["clips"]["b"]["lmd"]
  assert results["overall"]["fvd25"] > 0 and results["overall"]["fid"] > 0
  # Clip a's head moves; the frozen head only shows the tracker's jitter on H.264 frames.
  assert results["clips"]["a"]["delta_pose"] > 3 * results["clips"]["b"]["delta_pose"]
  # Clip a got the gaze and distance it asked for, clip b a gaze 20 degrees off.
  assert results["clips"]["a"]["gaze_error"] < 1e-4
  assert results["clips"]["b"]["gaze_error"] == pytest.approx(20.0, abs=1e-4)
  assert results["clips"]["a"]["distance_error"] < 1e-6
  assert -1.0 <= results["clips"]["a"]["csim"] <= 1.0
  assert abs(results["clips"]["a"]["sync_offset"]) <= 15
  lines = printed.splitlines()
  assert lines[0].split()[:3] == ["Sc", "↑", "SD"] and lines[1].startswith("generated")
  assert lines[1].split()[3] == "—"  # CAPP
  assert f"wrote {output}" in printed


def test_face_cropped_sync_equals_syncnet_python(tmp_path):
  torch.manual_seed(3)
  model = torch_syncnet.randomised(torch_syncnet.TorchSyncNet(width=SYNCNET_WIDTH), seed=4)
  torch.save(model.state_dict(), tmp_path / "syncnet.pth")
  convert_weights.convert(str(tmp_path / "syncnet.pth"), str(tmp_path / "syncnet.npz"),
                          evaluate.syncnet_model.SyncNet(width=SYNCNET_WIDTH))
  rng = np.random.default_rng(0)
  coarse = rng.uniform(0, 255, (30, 6, 6, 3)).astype(np.uint8)
  frames = np.stack([sync_eval.resize_bilinear(frame, 224) for frame in coarse])
  audio = mfcc.int16_samples(0.2 * rng.normal(size=30 * 640))
  write_clip(tmp_path / "crop.mp4", frames, audio)
  output = tmp_path / "sync.json"
  assert evaluate.main([f"--generated={tmp_path / 'crop.mp4'}", f"--output={output}",
                        "--metrics=sync", "--face_cropped", f"--syncnet={tmp_path / 'syncnet.npz'}",
                        f"--syncnet_width={SYNCNET_WIDTH}"]) == 0
  scores = json.loads(output.read_text())["clips"]["crop"]
  # The reference on what ffmpeg would hand it: the decoded frames and int16 16 kHz audio.
  clip = media.read_video(str(tmp_path / "crop.mp4"), fps=25.0)
  decoded_audio = mfcc.int16_samples(
      media.read_audio(str(tmp_path / "crop.mp4"), 16_000, start_time=clip.start_time))
  offset, confidence, distance = torch_syncnet.reference_evaluate(model, clip.frames,
                                                                  decoded_audio)
  assert scores["sync_offset"] == offset
  assert scores["sync_confidence"] == pytest.approx(confidence, rel=1e-3)
  assert scores["sync_distance"] == pytest.approx(distance, rel=1e-3)


def run_cli(*args):
  return subprocess.run([sys.executable, "-m", "vasa_jax.evaluate", *args],
                        capture_output=True, text=True, check=False)


def test_missing_weights_and_bad_clips_are_reported(workspace, tmp_path):
  root, _, _ = workspace
  generated = tmp_path / "generated"
  generated.mkdir()
  (generated / "a.mp4").write_bytes((root / "generated" / "a.mp4").read_bytes())
  (generated / "broken.mp4").write_bytes(b"not a video")
  media.write_video(str(generated / "blank.mp4"), np.full((30, 96, 96, 3), 128, np.uint8), 25.0)
  output = tmp_path / "out" / "results.json"
  result = run_cli(f"--generated={generated}", f"--output={output}",
                   "--metrics=sync,fvd,capp,pose", f"--syncnet={tmp_path / 'nowhere.npz'}")
  assert result.returncode == 0, result.stderr
  results = json.loads(output.read_text())
  notes = "\n".join(results["notes"])
  assert f"weight file '{tmp_path / 'nowhere.npz'}' not found" in notes
  assert "python -m data_prep.convert_weights --kind=syncnet --input=syncnet_v2.model" in notes
  assert "--i3d not given" in notes and "--kind=i3d" in notes
  assert set(results["metrics"]) == {"pose"}
  assert set(results["clips"]["a"]) == {"delta_pose"}
  skipped = {(item["clip"], item["metric"]): item["reason"] for item in results["skipped"]}
  assert skipped[("broken", "all")].startswith("unreadable")
  assert skipped[("blank", "pose")] == "face tracker: no_face"
  assert results["counts"] == {"clips": 3, "scored": {"delta_pose": 1}, "set_features": {},
                               "skipped": 2}
  assert "note: sync left out" in result.stdout and "skipped blank (pose)" in result.stdout
  assert "sync_confidence" not in results["overall"]


@pytest.mark.parametrize("arguments, message", [
    (["--generated=/nowhere/x.mp4"], "--generated '/nowhere/x.mp4' does not exist"),
    (["--metrics=sync,psnr"], "unknown ['psnr']"),
    (["--output=results.txt"], "must end in .json"),
    (["--audio=AUDIO"], "--audio is one file but there are 2 generated clips"),
])
def test_bad_input_is_one_line(workspace, tmp_path, capsys, arguments, message):
  root, _, _ = workspace
  defaults = {"--generated": str(root / "generated"), "--output": str(tmp_path / "r.json")}
  for argument in arguments:
    flag, value = argument.split("=", 1)
    defaults[flag] = value.replace("AUDIO", str(root / "photos" / "a.png"))
  assert evaluate.main([f"{flag}={value}" for flag, value in defaults.items()]) == 1
  error = capsys.readouterr().err
  assert error.startswith("error: ") and error.count("\n") == 1
  assert message in error
