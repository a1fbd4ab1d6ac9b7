"""What a bare CUDA box measures (a benchmark, not a test): run it there, read its tables.

    python benchmarks/gpu_check.py                 # install, devices, suites -m gpu, the GPU suite, the ratio
    python benchmarks/gpu_check.py --cpu           # the CPU half (what CI runs: tests/test_gpu_check.py)

Steps, each printed with its exit code:

1. ``pip install -e '.[torch]'`` from this checkout (``--skip-install`` leaves it out);
2. ``harness devices``;
3. with a GPU: ``harness run suites -m gpu`` (the shipped suites' GPU targets: torch, ONNX
   Runtime, trtexec; a missing runtime piece skips naming its install) and
   ``harness run examples/torch_gpu`` (torch inference at fp16, NCHW / NHWC / CUDA
   graphs, parity against the ONNX export, training with and without channels_last);
   without one: ``harness run examples/torch_cpu`` (parity and throughput on the CPU);
4. the ratio: the harness's torch runner, timed by the harness's own engine
   (``harness.metrics.timing.measure``, as the throughput stage does), against a raw
   loop of the same model, batch, precision and layout, in this one process,
   interleaved round by round (the order alternates). On a GPU both sides are CUDA
   events around the forward pass (device scope); on the CPU both are the host clock.
   Printed: each round, the median ratio and its 95% interval over rounds
   (:func:`harness.metrics.repetitions.median_ci`), and the load average.
   The target is >= 0.97.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def step(title: str, cmd: list[str], env=None) -> int:
    print(f"\n=== {title}: {' '.join(cmd)}", flush=True)
    t0 = time.perf_counter()
    rc = subprocess.call(cmd, cwd=ROOT, env=env)
    print(f"=== {title}: exit {rc} ({time.perf_counter() - t0:.0f} s)", flush=True)
    return rc


def raw_loop(model, xt, seconds: float, gpu: bool, amp_dtype) -> list[float]:
    """Three windows of ``seconds / 3`` each: per window images/s of a plain loop."""
    import torch

    bs = xt.shape[0]
    out = []
    with torch.inference_mode(), torch.autocast(xt.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
        for _ in range(3):
            busy, n, w0 = 0.0, 0, time.perf_counter()
            if gpu:
                pairs = []
                while time.perf_counter() - w0 < seconds / 3 or n < 3:
                    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                    s.record()
                    model(xt)
                    e.record()
                    pairs.append((s, e))
                    n += 1
                    torch.cuda.synchronize()
                busy = sum(s.elapsed_time(e) for s, e in pairs) / 1e3
            else:
                while time.perf_counter() - w0 < seconds / 3 or n < 3:
                    t = time.perf_counter()
                    model(xt)
                    busy += time.perf_counter() - t
                    n += 1
            out.append(bs * n / busy)
    return out


def ratio(arch: str, size: int, batch: int, precision: str, channels_last: bool, rounds: int, seconds: float,
          device: str) -> dict:
    """Harness torch runner / raw loop, interleaved in one process."""
    import torch

    from harness.metrics.repetitions import median_ci
    from harness.metrics.timing import TimingConfig, measure
    from harness.models.torch_net import build_model
    from harness.runners.torch_runner import TorchRunner, autocast_dtype

    gpu = device == "gpu"
    model = build_model(arch, 1000, None, seed=0)
    x = np.random.default_rng(0).standard_normal((batch, 3, size, size), dtype=np.float32)
    # on the CPU one thread a side: on a shared host two threads wait on each other's neighbours
    runner = TorchRunner(device, 0, precision, {"channels_last": channels_last, **({} if gpu else {"threads": 1})})
    runner.load(model, x.shape)
    dtype = autocast_dtype(precision, device)
    amp = getattr(torch, dtype) if dtype else None
    raw_model = runner.model  # the same module, device and layout: only the loop differs
    xt = torch.from_numpy(x).to(runner.dev).contiguous(memory_format=runner.fmt)
    cfg = TimingConfig(warmup=3, min_iterations=6, min_duration_s=seconds, repetitions=3, max_repetitions=3,
                       budget_s=4 * seconds, max_duration_s=6 * seconds, warmup_max_s=seconds, max_redo=0)
    raw_loop(raw_model, xt, seconds / 2, gpu, amp)  # warm the raw side as the engine warms its own
    rows = []
    for i in range(rounds):
        order = ("harness", "raw") if i % 2 == 0 else ("raw", "harness")
        got = {}
        for side in order:
            if side == "harness":
                got[side] = measure(runner, x, cfg).throughput_ips
            else:
                got[side] = float(np.median(raw_loop(raw_model, xt, seconds, gpu, amp)))
        rows.append((got["harness"], got["raw"], got["harness"] / got["raw"]))
        print(f"  round {i + 1}: harness {got['harness']:.2f} img/s, raw {got['raw']:.2f} img/s, "
              f"ratio {rows[-1][2]:.4f}", flush=True)
    runner.close()
    ci = median_ci([r[2] for r in rows])
    return {"arch": arch, "size": size, "batch": batch, "precision": precision, "channels_last": channels_last,
            "device": device, "scope": "device (CUDA events)" if gpu else "host", "rounds": rows,
            "median": ci.median, "lo": ci.lo, "hi": ci.hi, "method": ci.method, "loadavg": Path("/proc/loadavg").read_text().strip() if Path("/proc/loadavg").is_file() else "?",
            "gpu": torch.cuda.get_device_name() if gpu else None}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cpu", action="store_true", help="the CPU half only, even where a GPU is present")
    p.add_argument("--skip-install", action="store_true", help="do not pip install the project first")
    p.add_argument("--skip-suites", action="store_true", help="only the ratio")
    p.add_argument("--rounds", type=int, default=None, help="interleaved rounds of the ratio (default 6 GPU, 8 CPU)")
    p.add_argument("--seconds", type=float, default=None, help="timed seconds per side per round")
    p.add_argument("--out", default=None, help="folder for the stores (default: a temporary one)")
    a = p.parse_args(argv)
    out = Path(a.out or tempfile.mkdtemp(prefix="gpu_check-"))
    out.mkdir(parents=True, exist_ok=True)
    py = sys.executable
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    rcs = {}
    if not a.skip_install:
        rcs["install"] = step("install", [py, "-m", "pip", "install", "-q", "-e", ".[torch]"])
    import torch

    gpu = torch.cuda.is_available() and not a.cpu
    print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, GPU: "
          f"{torch.cuda.get_device_name() if torch.cuda.is_available() else 'none'}; "
          f"{'GPU' if gpu else 'CPU'} half", flush=True)
    if not a.skip_suites:
        rcs["devices"] = step("harness devices", [py, "-m", "harness", "devices"], env)
        cache = ["--cache", str(out / "cache")]
        if gpu:
            rcs["suites -m gpu"] = step("shipped suites, GPU targets", [
                py, "-m", "harness", "run", "suites", "-m", "gpu", "-v", "--store", str(out / "suites_gpu.sqlite"),
                *cache], env)
            rcs["torch_gpu"] = step("GPU suite: torch inference and training", [
                py, "-m", "harness", "run", "examples/torch_gpu", "-v", "--store", str(out / "torch_gpu.sqlite"),
                "--require", "gpu", *cache], env)
        else:
            rcs["torch_cpu"] = step("CPU suite: torch runner parity and throughput", [
                py, "-m", "harness", "run", "examples/torch_cpu", "-m", "cpu", "-v",
                "--store", str(out / "torch_cpu.sqlite"), *cache], env)
    if gpu:
        cases = [("legacy_seresnext50_32x4d", 224, 64, "fp16", False), ("legacy_seresnext50_32x4d", 224, 256, "fp16", True)]
        rounds, seconds = a.rounds or 6, a.seconds or 3.0
    else:
        cases = [("resnet18", 64, 8, "fp32", False)]
        rounds, seconds = a.rounds or 8, a.seconds or 1.5
    print(f"\n=== ratio: harness torch runner / raw loop ({rounds} interleaved rounds, {seconds:g} s a side)")
    worst = None
    for arch, size, bs, prec, nhwc in cases:
        print(f"{arch} {size}px bs{bs} {prec} {'NHWC' if nhwc else 'NCHW'}:")
        r = ratio(arch, size, bs, prec, nhwc, rounds, seconds, "gpu" if gpu else "cpu")
        print(f"RATIO {arch} bs{bs} {prec} {'NHWC' if nhwc else 'NCHW'} [{r['scope']}"
              f"{', ' + r['gpu'] if r['gpu'] else ''}]: median {r['median']:.4f}, 95% interval "
              f"[{r['lo']:.4f}, {r['hi']:.4f}] ({r['method']}, {rounds} rounds), target >= 0.97: "
              f"{'met' if r['median'] >= 0.97 else 'NOT met'}; loadavg {r['loadavg']}", flush=True)
        worst = r["median"] if worst is None else min(worst, r["median"])
    print("\n=== summary: " + ", ".join(f"{k} exit {v}" for k, v in rcs.items()))
    return 0 if all(v == 0 for v in rcs.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
