"""Compiled per-device memory of 7B train steps (full / LoRA / vision-only) on 1 device and
an fsdp=8 mesh, from abstract shapes (no weights allocated). Sets 8 fake CPU devices itself.
Same as `jaxunlearn bench --plan PRESET`.

    python scripts/bench_plan.py [--preset llava-1.5-7b] [--batch 8] [--seq 1024]
"""

import argparse
import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="llava-1.5-7b")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=1024)
    ap.add_argument("--mesh", default="data=1,fsdp=1,tensor=1;data=1,fsdp=8,tensor=1")
    args = ap.parse_args()
    from jaxunlearn.bench.suite import run_plan

    run_plan(args.preset, args.mesh, args.batch, args.seq)


if __name__ == "__main__":
    main()
