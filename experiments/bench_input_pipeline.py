"""Throughput of the Grain input pipelines on a prepared directory; prints and writes JSON.

  python experiments/bench_input_pipeline.py --data_dir=/tmp/vasa_demo/synthtalk \
      --image_size=128 --batch_size=16 --output=/tmp/bench_input_pipeline.json

Measures examples per second of the stage-1 sampler (frame pairs + cross-identity frame, JPEG
decoding and augmentation) and the stage-2 sampler (windows of per-frame fields and raw audio),
for each requested number of Grain worker processes, after a warm-up.
"""

import argparse
import json
import time

from vasa_jax.data import input_pipeline


def measure(make_iterator, num_batches: int, batch_size: int) -> float:
  iterator = make_iterator()
  next(iterator)  # warm-up: worker start and first batch
  start = time.perf_counter()
  for _ in range(num_batches):
    next(iterator)
  return num_batches * batch_size / (time.perf_counter() - start)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--data_dir", required=True)
  parser.add_argument("--split", default="train")
  parser.add_argument("--image_size", type=int, default=128)
  parser.add_argument("--batch_size", type=int, default=16)
  parser.add_argument("--num_batches", type=int, default=20)
  parser.add_argument("--workers", default="0,2", help="Comma-separated worker counts.")
  parser.add_argument("--window", type=int, default=25)
  parser.add_argument("--output", default="bench_input_pipeline.json")
  args = parser.parse_args()

  results = []
  for num_workers in (int(n) for n in args.workers.split(",")):
    augmentation = input_pipeline.Augmentation(flip_prob=0.5, brightness=0.1, scale=0.05)
    stage1 = measure(lambda: input_pipeline.stage1_iterator(
        args.data_dir, args.split, batch_size=args.batch_size, image_size=args.image_size,
        seed=0, augmentation=augmentation, num_workers=num_workers),
        args.num_batches, args.batch_size)
    stage2 = measure(lambda: input_pipeline.stage2_iterator(
        args.data_dir, args.split, batch_size=args.batch_size, window=args.window,
        num_previous=5, frame_fields=("annotations/head_pose",), with_audio=True, seed=0,
        num_workers=num_workers), args.num_batches, args.batch_size)
    results.append({"num_workers": num_workers, "stage1_examples_per_second": round(stage1, 1),
                    "stage2_windows_per_second": round(stage2, 1)})
    print(f"workers={num_workers}: stage 1 {stage1:8.1f} examples/s   "
          f"stage 2 {stage2:8.1f} windows/s", flush=True)
  report = {"data_dir": args.data_dir, "image_size": args.image_size,
            "batch_size": args.batch_size, "results": results}
  with open(args.output, "w", encoding="utf-8") as f:
    json.dump(report, f, indent=1)
  print(f"wrote {args.output}")


if __name__ == "__main__":
  main()
