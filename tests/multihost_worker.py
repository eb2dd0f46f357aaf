"""One process of the multi-process training tests (tests/test_multihost.py).

  python -m tests.multihost_worker READ_LOG <python -m vasa_jax.train flags...>

Runs `vasa_jax.train` as its command line does, after wrapping the stage-1 and stage-2 samplers so
that every example this process draws appends its clip id to READ_LOG (one line each): the test
reads which records each process trained on.
"""

import sys

from absl import app
from absl import flags

from vasa_jax import train
from vasa_jax.data import input_pipeline


def log_reads(sampler_class: type, path: str) -> None:
  """Makes `sampler_class(record_index, rng)` append the record's clip id to `path` first."""
  sample = sampler_class.__call__

  def logged_sample(self, record_index, rng):
    with open(path, "a", encoding="utf-8") as log:
      log.write(f"{self.reader.index.clip_ids[record_index]}\n")
    return sample(self, record_index, rng)

  sampler_class.__call__ = logged_sample


if __name__ == "__main__":
  read_log = sys.argv.pop(1)
  for sampler in (input_pipeline.Stage1Sampler, input_pipeline.Stage2Sampler):
    log_reads(sampler, read_log)
  flags.mark_flags_as_required(["config"])
  app.run(train.main, flags_parser=train.parse_flags)
