"""The README's first command (the main job), measured: wall time, peak
memory of the whole process tree, and where both go, per case and per stage.

    python3 benchmarks/main_job.py                 # the run part, in this environment, cold
    python3 benchmarks/main_job.py --fresh-venv    # install + run in a new venv, as a newcomer (.ci/run)

The command is read from README.md (the first line of its first code block
that is not a comment), so the README and what is measured cannot drift
apart. Without --fresh-venv only the part after `&&` runs, with an empty
store and cache (HARNESS_STORE, HARNESS_CACHE in a temporary folder): a cold
run. With --fresh-venv the whole line runs verbatim in a new `python3 -m
venv` whose bin/ is first on PATH, in the repository (its .harness/ moved aside
first), exactly as someone who cloned it would type it.

A pytest plugin (main_job_probe.py, loaded through PYTEST_PLUGINS) writes one
line per case; a sampler reads the resident memory of the command's process
tree every 0.1 s. Then the command is checked: exit 0, no case failed or
errored, every skip with a reason, a non-empty report. Any failure is printed
with the case and its reason and makes this script exit 1 (CI reads that).
Figures only: nothing is asserted about speed.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def readme_commands(readme: Path = REPO / "README.md") -> list[str]:
    """The commands of the README's first code block (comments and blank lines left out)."""
    lines, inside = [], False
    for line in readme.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            if inside:
                break
            inside = True
            continue
        if inside and line.strip() and not line.lstrip().startswith("#"):
            lines.append(line.strip())
    if len(lines) < 2:
        raise SystemExit(f"{readme}: its first code block should hold two commands (main job, tests); found {lines}")
    return lines


def run_part(command: str) -> str:
    """The part of `INSTALL && RUN` after the last `&&`."""
    return command.split("&&")[-1].strip()


def report_path(command: str) -> str | None:
    words = shlex.split(run_part(command))
    return words[words.index("--report") + 1] if "--report" in words else None


# -- memory of a process tree ------------------------------------------------------------
def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = defaultdict(list)
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                stat = Path(f"/proc/{d}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            kids[ppid].append(int(d))
    return kids


def _rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


class TreeSampler(threading.Thread):
    """Peak of the summed RSS of a process and all its descendants, and when a
    `harness` process first appeared (where the run part of the command starts)."""

    def __init__(self, root: int, period: float = 0.1):
        super().__init__(daemon=True)
        self.root, self.period = root, period
        self.peak_kb, self.samples = 0, 0
        self.harness_started: float | None = None
        self._halt = threading.Event()

    def run(self):
        while not self._halt.is_set():
            kids, todo, total = _children(), [self.root], 0
            while todo:
                pid = todo.pop()
                total += _rss_kb(pid)
                todo.extend(kids.get(pid, ()))
                if self.harness_started is None and any(Path(a).name == "harness" for a in _cmdline(pid)[:2]):
                    self.harness_started = time.time()
            self.peak_kb = max(self.peak_kb, total)
            self.samples += 1
            self._halt.wait(self.period)

    def stop(self):
        self._halt.set()
        self.join()


# -- the run ------------------------------------------------------------------------------------------
def measure(command: str, *, cwd: Path, env: dict, probe: Path, log: Path) -> dict:
    env = {**env, "MAIN_JOB_PROBE": str(probe), "PYTEST_PLUGINS": "main_job_probe",
           "PYTHONPATH": os.pathsep.join(p for p in (str(REPO / "benchmarks"), env.get("PYTHONPATH")) if p)}
    t0 = time.time()
    with open(log, "w", encoding="utf-8") as out:
        proc = subprocess.Popen(["bash", "-c", command], cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
        sampler = TreeSampler(proc.pid)
        sampler.start()
        rc = proc.wait()
        sampler.stop()
    end = time.time()
    cases = [json.loads(line) for line in probe.read_text().splitlines()] if probe.is_file() else []
    start = sampler.harness_started or t0
    return {"rc": rc, "wall_s": end - t0, "run_wall_s": end - start, "install_s": start - t0 if sampler.harness_started else None,
            "peak_rss_mb": sampler.peak_kb / 1024, "records": cases}


def stage_of(nodeid: str) -> tuple[str, str]:
    """('throughput', 'cpu-onnxruntime') from '...::throughput[cpu-onnxruntime-bs8]'."""
    name = nodeid.split("::")[-1]
    stage, _, param = name.partition("[")
    target = param.rstrip("]").rsplit("-bs", 1)[0] if param else ""
    return stage, target


def summarize(res: dict) -> None:
    cases = [r for r in res["records"] if r.get("event") == "case"]
    print(f"exit {res['rc']}; whole command {res['wall_s']:.1f} s"
          + (f" (install {res['install_s']:.1f} s, run {res['run_wall_s']:.1f} s)" if res["install_s"] is not None else "")
          + f"; peak RSS of the process tree {res['peak_rss_mb']:.0f} MB")
    if not cases:
        print("no case records (the probe did not load?)")
        return
    in_cases = sum(r["wall_s"] for r in cases)
    print(f"{len(cases)} cases, {in_cases:.1f} s inside cases; {res['run_wall_s'] - in_cases:.1f} s of the run outside "
          "them (start-up, collection, report)")
    groups: dict[tuple, list] = defaultdict(list)
    for r in cases:
        groups[stage_of(r["nodeid"])].append(r)
    print(f"\n{'stage':<11} {'target':<24} {'cases':>5} {'wall s':>8} {'cpu s':>8} {'peak MB':>8}")
    for (stage, target), rs in sorted(groups.items(), key=lambda kv: -sum(r["wall_s"] for r in kv[1])):
        hwm = max((r["hwm_kb"] or 0) for r in rs) / 1024
        print(f"{stage:<11} {target:<24} {len(rs):>5} {sum(r['wall_s'] for r in rs):>8.1f} "
              f"{sum(r['cpu_s'] + r['children_cpu_s'] for r in rs):>8.1f} {hwm:>8.0f}")
    print("\nslowest cases:")
    for r in sorted(cases, key=lambda r: -r["wall_s"])[:8]:
        print(f"  {r['wall_s']:7.1f} s  peak {(r['hwm_kb'] or 0) / 1024:6.0f} MB  {r['nodeid']}")
    print("largest peaks:")
    for r in sorted(cases, key=lambda r: -(r["hwm_kb"] or 0))[:5]:
        print(f"  {(r['hwm_kb'] or 0) / 1024:6.0f} MB  (RSS after {r['rss_kb'] / 1024:6.0f} MB)  {r['nodeid']}")


def problems(res: dict, report: Path | None) -> list[str]:
    """What makes the main job a failure for a newcomer."""
    out = []
    cases = [r for r in res["records"] if r.get("event") == "case"]
    if res["rc"] != 0:
        out.append(f"the command exited {res['rc']} (expected 0)")
    if not cases:
        out.append("no case ran")
    for r in cases:
        if r["outcome"] not in ("passed", "skipped"):
            out.append(f"{r['nodeid']}: {r['outcome']}: {r.get('reason') or 'see the log'}")
        elif r["outcome"] == "skipped" and not (r.get("reason") or "").strip():
            out.append(f"{r['nodeid']}: skipped without a reason")
    if report is not None and (not report.is_file() or report.stat().st_size == 0):
        out.append(f"{report}: the report was not written (or is empty)")
    return out


# The commands a newcomer tries next, on the store the main job left; each must work
# on the main job's install (or name the extra it needs), without a traceback.
# gate: one run has nothing to compare with (4) or cannot judge yet (6): both are answers.
NEXT_COMMANDS = [(["harness", "show"], (0,)),
                 (["harness", "export", "--format", "csv", "--out", "{work}/results.csv"], (0,)),
                 (["harness", "report", "--out", "{work}/report-again.html"], (0,)),
                 (["harness", "gate"], (0, 4, 6)),
                 (["harness", "validate"], (0,))]


def next_commands(cwd: Path, env: dict, work: Path) -> list[str]:
    """Run NEXT_COMMANDS; what went wrong, one line each."""
    bad = []
    for argv, ok in NEXT_COMMANDS:
        argv = [a.format(work=work) for a in argv]
        proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
        out = proc.stdout + proc.stderr
        line = " ".join(argv)
        print(f"  {line}: exit {proc.returncode}")
        if proc.returncode not in ok or "Traceback" in out:
            tail = out.strip().splitlines()[-3:]
            bad.append(f"`{line}` exited {proc.returncode}: " + " | ".join(tail))
    return bad


def move_aside(names, work: Path) -> None:
    """What a run would find in the repository (the user's store, cache, report) is
    moved into the work folder, never deleted."""
    for name in names:
        if name and (REPO / name).exists():
            kept = work / f"kept-{name.lstrip('.')}-{int(time.time())}"
            shutil.move(str(REPO / name), kept)
            print(f"moved {REPO / name} aside to {kept}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fresh-venv", action="store_true",
                    help="install and run in a new venv, the whole README line verbatim (what CI does)")
    ap.add_argument("--keep", type=Path, help="keep the venv, store, cache and logs here (default: a temporary folder)")
    ap.add_argument("--json", type=Path, help="also write the figures and per-case records here")
    args = ap.parse_args(argv)

    command = readme_commands()[0]
    work = args.keep or Path(tempfile.mkdtemp(prefix="main-job-"))
    work.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in ("HARNESS_STORE", "HARNESS_CACHE", "VIRTUAL_ENV")}
    report = report_path(command)
    if args.fresh_venv:
        venv = work / "venv"
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        env["VIRTUAL_ENV"] = str(venv)
        move_aside([".harness", report], work)  # a fresh clone has no store, cache or report
        to_run = command
    else:
        env["HARNESS_STORE"], env["HARNESS_CACHE"] = str(work / "store.sqlite"), str(work / "cache")
        shutil.rmtree(work / "cache", ignore_errors=True)
        (work / "store.sqlite").unlink(missing_ok=True)
        move_aside([report], work)  # the report is checked afresh
        to_run = run_part(command)
    print(f"main job: {to_run}\n  (in {REPO}; log, probe: {work}; load average before: "
          f"{Path('/proc/loadavg').read_text().split()[:3]}, {os.cpu_count()} cores)", flush=True)
    probe = work / "probe.jsonl"
    probe.unlink(missing_ok=True)
    res = measure(to_run, cwd=REPO, env=env, probe=probe, log=work / "main_job.log")
    print(f"load average after: {Path('/proc/loadavg').read_text().split()[:3]}")
    summarize(res)
    bad = problems(res, REPO / report if report else None)
    if args.fresh_venv and res["rc"] == 0:
        print("\nthe next commands, on the main job's install and store:")
        bad += next_commands(REPO, env, work)
    if args.json:
        args.json.write_text(json.dumps({k: v for k, v in res.items()}, indent=1))
    if bad:
        print("\nMAIN JOB FAILED (the README's first command, as a newcomer runs it):")
        for line in bad:
            print(f"  - {line}")
        print(f"  log: {work / 'main_job.log'}; its last lines:")
        tail = (work / "main_job.log").read_text(errors="replace").splitlines()[-25:]
        print("\n".join("    " + t for t in tail))
        return 1
    print("\nmain job OK: exit 0, no failed or errored case, every skip has a reason, report written")
    return 0


if __name__ == "__main__":
    sys.exit(main())
