"""Compiled per-device memory of 7B train steps (full / LoRA / vision-only) on 1 device and an
fsdp=8 mesh, from abstract shapes (no weights allocated). Sets 8 fake CPU devices itself.

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
    ap.add_argument("--modes", default="full,lora,vision")
    args = ap.parse_args()
    from jaxunlearn.bench.plan import fits, plan_train_step
    from jaxunlearn.modeling.presets import load_preset

    preset = load_preset(args.preset)
    print(f"{args.preset}: batch {args.batch} x {args.seq} tokens, param {preset['param_dtype']}, "
          f"compute {preset['compute_dtype']}, remat {preset['remat']}")
    print(f"{'mode':<8}{'mesh':<22}{'args GiB':>10}{'temp GiB':>10}{'peak GiB':>10}  fits")
    for mode in args.modes.split(","):
        for mesh in ({"data": 1, "fsdp": 1, "tensor": 1}, {"data": 1, "fsdp": 8, "tensor": 1}):
            r = plan_train_step(preset, mode, mesh, batch=args.batch, seq=args.seq)
            print(f"{mode:<8}{str(r['mesh']):<22}{r['argument_gib']:>10.2f}{r['temp_gib']:>10.2f}"
                  f"{r['peak_gib']:>10.2f}  {fits(r['peak_gib'])}", flush=True)


if __name__ == "__main__":
    main()
