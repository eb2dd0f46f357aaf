r"""Generates SynthTalk, synthetic talking heads with ground truth (`vasa_jax.data.synthtalk`).

  python -m data_prep.synthtalk --output_dir=/data/synthtalk --num_speakers=100 \
      --clips_per_speaker=10 --resolution=128 --num_workers=2

`python -m data_prep.synthtalk --help` lists the flags.
"""

from vasa_jax.data.synthtalk import dataset

if __name__ == "__main__":
  dataset.main()
