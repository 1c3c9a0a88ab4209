"""Generation speed of the built-in synthetic datasets (frames per second, one process = one core).

    python benchmarks/bench_data.py [--resolution 32] [--samples 300] [--check]

``--check`` exits with status 1 if synthetic_motion (rgb + depth) is below 1000 frames/s of CPU time
(single-threaded numpy: CPU time = one core's throughput, robust to a shared machine).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))

from mmh.data import build_dataset

CASES = [
    ("synthetic_motion", ("rgb", "depth")),
    ("synthetic_motion", ("rgb", "depth", "ir", "flow")),
    ("synthetic_shapes", ("rgb", "depth")),
    ("synthetic_shapes", ("rgb", "depth", "ir")),
    ("synthetic_antispoof", ("rgb", "depth", "ir")),
]


def frames_per_second(name: str, modalities: tuple[str, ...], resolution: int, samples: int) -> tuple[float, float]:
    """Frames generated per second by ``ds[i]`` in this process (clips count T frames): (wall, CPU time).

    The CPU-time rate is the per-core throughput, unaffected by other processes sharing the machine.
    """
    ds = build_dataset(name, split="train", size=samples, resolution=resolution, modalities=modalities)
    ds[0]  # warm-up (ray grid cache)
    start, cpu = time.perf_counter(), time.process_time()
    frames = 0
    for i in range(samples):
        item = ds[i]
        frames += item[modalities[0]].shape[0] if ds.is_clip else 1
    return frames / (time.perf_counter() - start), frames / (time.process_time() - cpu)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--check", action="store_true", help="fail if synthetic_motion < 1000 frames/s")
    args = parser.parse_args(argv)
    print(f"{'dataset':<22}{'modalities':<26}{'res':>5}{'frames/s wall':>15}{'frames/s CPU':>14}")
    motion = None
    for name, mods in CASES:
        wall, cpu = frames_per_second(name, mods, args.resolution, args.samples)
        if name == "synthetic_motion" and mods == ("rgb", "depth"):
            motion = cpu
        print(f"{name:<22}{'+'.join(mods):<26}{args.resolution:>5}{wall:>15.0f}{cpu:>14.0f}", flush=True)
    if args.check and motion is not None and motion < 1000:
        print(f"FAIL: synthetic_motion generates {motion:.0f} frames/s < 1000", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
