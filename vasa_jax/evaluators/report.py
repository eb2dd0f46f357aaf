"""The evaluator's results: per-clip values, overall values, and the printed table.

Result keys (per clip and overall, each present only when computed; never a stand-in 0):
  sync_confidence (Sc, LSE-C), sync_distance (SD, LSE-D), sync_offset (frames), capp,
  delta_pose (degrees), fvd25 and fid (overall only: set-level), csim, gaze_error (degrees),
  distance_error, lmd (pixels at a 256 px frame), and the extra mouth_envelope_correlation.
Overall values are means over the clips that have the value (sync_offset: the mean offset).
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Mapping, Sequence

CLIP_KEYS = ("sync_confidence", "sync_distance", "sync_offset", "capp", "delta_pose", "csim",
             "gaze_error", "distance_error", "lmd", "mouth_envelope_correlation")
SET_KEYS = ("fvd25", "fid")
# VASA-1 Table 1's columns, then the other metrics: (key, heading).
TABLE_1 = (("sync_confidence", "Sc ↑"), ("sync_distance", "SD ↓"), ("capp", "CAPP ↑"),
           ("delta_pose", "ΔP"), ("fvd25", "FVD25 ↓"))
OTHER_COLUMNS = (("fid", "FID ↓"), ("csim", "CSIM ↑"), ("gaze_error", "E_g ↓"),
                 ("distance_error", "E_d ↓"), ("lmd", "LMD ↓"), ("sync_offset", "offset"),
                 ("mouth_envelope_correlation", "mouth-env r ↑"))
_COLUMN_WIDTH = 14


def overall(per_clip: Mapping[str, Mapping[str, float]], set_values: Mapping[str, float]
            ) -> tuple[dict[str, float], dict[str, int]]:
  """(overall values, number of clips each clip-level value averages over)."""
  values, counts = {}, {}
  for key in CLIP_KEYS:
    finite = [clip[key] for clip in per_clip.values()
              if key in clip and math.isfinite(clip[key])]
    if finite:
      values[key] = float(sum(finite) / len(finite))
      counts[key] = len(finite)
  values.update({key: float(value) for key, value in set_values.items()})
  return values, counts


def _cell(values: Mapping[str, float], key: str) -> str:
  value = values.get(key)
  if value is None:
    return "—"
  if abs(value) >= 1000:
    return f"{value:.1f}"
  return f"{round(value, 3) + 0.0:.3f}"  # + 0.0: no "-0.000" for a round-off negative


def _rows(columns: Sequence[tuple[str, str]], values: Mapping[str, float], label: str
          ) -> list[str]:
  header = " " * _COLUMN_WIDTH + "".join(f"{title:>{_COLUMN_WIDTH}}" for _, title in columns)
  row = f"{label:<{_COLUMN_WIDTH}}" + "".join(f"{_cell(values, key):>{_COLUMN_WIDTH}}"
                                             for key, _ in columns)
  return [header, row]


def table(values: Mapping[str, float], label: str = "generated") -> str:
  """VASA-1 Table 1's layout (Sc, SD, CAPP, ΔP, FVD25), then FID, CSIM, E_g, E_d, LMD and the
  extra columns; "—" where a metric was not computed."""
  return "\n".join(_rows(TABLE_1, values, label) + [""] + _rows(OTHER_COLUMNS, values, label))


def problems_text(notes: Iterable[str], skipped: Sequence[Mapping[str, Any]]) -> str:
  """The notes (metrics left out) and the skipped clips, one per line."""
  lines = [f"note: {note}" for note in notes]
  lines += [f"skipped {item['clip']} ({item['metric']}): {item['reason']}" for item in skipped]
  return "\n".join(lines)
