"""Data-parallel scaling of the train stage on this host, through torchrun:
prints img/s with 1 and 2 processes (gloo) and their ratio, asserts nothing.

    python benchmarks/train_scaling.py [--suite suites/efficientnet_b0] [--size 32] [--batch 4] [--steps 8]
                                       [--framework torch|mindspore]

Both runs go through the same launcher (torchrun --standalone with 1 thread
per process, so the second process gets the second core; or msrun, whose
MindSpore CPU workers keep MindSpore's own thread count) with the suite's
recipe, reduced to --size px and --batch images per process; the documents'
figures are 8-device runs, printed beside for reference (no 1-device figure
is documented, so no documented scaling ratio exists).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> int:
    from harness.config.baselines import load_baselines, select
    from harness.config.suite import load_suite
    from harness.stages import stage_sections
    from harness.stages.train import TrainTarget
    from harness.train import launchers
    from harness.train.plan import plan_for
    from harness.train.timing import summarize

    ap = argparse.ArgumentParser()
    ap.add_argument("--suite", default=str(REPO / "suites" / "efficientnet_b0"))
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--cache", default="/tmp/harness-train-scaling")
    ap.add_argument("--framework", choices=("torch", "mindspore"), default="torch",
                    help="torch: torchrun + gloo; mindspore: msrun (dynamic cluster, DistributedGradReducer)")
    a = ap.parse_args()
    suite = load_suite(a.suite, stage_sections())
    cfg = suite.stage_config["train"]
    rates = {}
    for n in (1, 2):
        t = TrainTarget(name=f"cpu-{a.framework}-x{n}", device="cpu", framework=a.framework, batch_sizes=[a.batch],
                        num_devices=n, image_size=a.size, steps=a.steps, warmup_steps=a.warmup, threads=1,
                        launcher=True, reduced=True)
        out = launchers.launch(plan_for(suite, cfg, t, a.batch, a.cache))
        s = summarize(out["step_s"], warmup=a.warmup, images_per_step=a.batch * n)
        rates[n] = s["train_images_per_s"]
        print(f"{n} process(es): {s['train_step_ms']:.1f} ms/step (p50 {s['train_step_ms_p50']:.1f}, "
              f"steady from step {s['steady_from_step']}), {rates[n]:.2f} img/s; first step "
              f"{out['time_to_first_step_s']:.2f} s; peak RSS rank 0 {out['peak_host_mb']:.0f} MB; "
              f"learns {out['learns_losses'][0]:.3f} -> {out['learns_losses'][-1]:.3f}\n  {out['launch_command']}")
    print(f"scaling (2-process img/s / 1-process img/s): {rates[2] / rates[1]:.2f} "
          f"(ideal 2.00; efficiency {rates[2] / rates[1] / 2:.0%})")
    bf = load_baselines(REPO / "baselines.yaml")
    for b in select(bf, metric="train_step_ms"):
        print(f"documented: {b.model} {b.device} batch {b.batch_size} x {b.num_devices} devices: {b.value} ms/step"
              f" = {b.batch_size * (b.num_devices or 1) / b.value * 1000:.0f} img/s ({b.id})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
