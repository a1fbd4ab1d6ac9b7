"""Progress of a run: the current case, done and left, and an ETA.

On a terminal a rich progress line redraws in place (to its own copy of the
terminal's file descriptor, so pytest's output capture during a case does not
swallow it). Elsewhere (CI logs) one plain line per finished case with its
headline figure.

The ETA adds up an estimate per case still to run: the median wall time of
the same (model, case) in the store's history (``metrics.case_s``) when it has
one; otherwise, from the plan, the median of this run's finished cases of the
same stage, or ``PLAN_GUESS_S`` for a stage that has not run yet.
"""

from __future__ import annotations

import os
import statistics
import time

from harness.reports.terminal import throughput_cell

# A stage's wall time before any case of it has run: a throughput case warms
# up for up to warmup_max_s (5 s) and measures for about budget_s (6 s).
PLAN_GUESS_S = {"throughput": 12.0, "parity": 5.0, "export": 10.0, "accuracy": 20.0}


def headline(res) -> str:
    """The one figure a finished case is known by."""
    m = res.metrics
    if res.status in ("failed", "error", "skipped"):
        return res.reason.splitlines()[0] if res.reason else res.status
    if res.stage == "throughput" and "throughput_ips" in m:
        return f"{throughput_cell(m)} img/s, p50 {m.get('latency_ms_p50', 0):.2f} ms"
    if res.stage == "parity" and "cosine" in m:
        return f"cosine {m['cosine']:.6f}"
    if res.stage == "accuracy" and "top1" in m:
        return f"top1 {m['top1']:.3f}"
    return res.reason.splitlines()[0] if res.reason else ""


def history_durations(results) -> dict[tuple[str, str], float]:
    """Median case_s per (model, case) over earlier results that recorded it."""
    seen: dict[tuple[str, str], list[float]] = {}
    for r in results:
        v = r.metrics.get("case_s")
        if isinstance(v, (int, float)) and r.status != "skipped":
            seen.setdefault((r.model, r.case), []).append(float(v))
    return {k: statistics.median(v) for k, v in seen.items()}


def _fmt(s: float) -> str:
    s = max(0, int(round(s)))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


class RunProgress:
    """Call ``start(case)`` and ``finish(result)`` per case; ``close()`` at the end."""

    def __init__(self, cases: list[tuple[str, str, str]], history: dict | None = None, *,
                 terminal: bool, out=None, clock=time.monotonic):
        self.cases = cases  # (model, case name, stage) in run order
        self.history = history or {}
        self.terminal = terminal
        self.clock = clock
        self.done = 0
        self.took: dict[str, list[float]] = {}
        self.current: tuple | None = None
        self.started = clock()
        self.case_started = self.started
        self.source = "history" if any((m, c) in self.history for m, c, _ in cases) else "plan"
        self._live = None
        self._out = out
        if terminal:
            from rich.console import Console
            from rich.live import Live

            if out is None:  # a private copy of the terminal's fd: pytest's fd capture leaves it alone
                out = self._out = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8", errors="replace")
            self._console = Console(file=out, force_terminal=True, width=min(100, _width()))
            self._live = Live(self, console=self._console, transient=True, refresh_per_second=2)
            self._live.start()

    # -- estimates -------------------------------------------------------------
    def estimate(self, model: str, case: str, stage: str) -> float:
        if (model, case) in self.history:
            return self.history[(model, case)]
        if self.took.get(stage):
            return statistics.median(self.took[stage])
        return PLAN_GUESS_S.get(stage, 10.0)

    def eta_s(self) -> float:
        left = self.cases[self.done:]
        total = sum(self.estimate(*c) for c in left)
        if self.current is not None and left:
            total -= min(self.clock() - self.case_started, self.estimate(*left[0]))
        return max(0.0, total)

    # -- events ----------------------------------------------------------------
    def start(self, model: str, case: str) -> None:
        self.current = (model, case)
        self.case_started = self.clock()
        if self._live is not None:
            self._live.refresh()

    def finish(self, res) -> None:
        took = self.clock() - self.case_started
        if res.status != "skipped":
            self.took.setdefault(res.stage, []).append(took)
        self.done += 1
        self.current = None
        line = (f"[{self.done}/{len(self.cases)}] {res.model} {res.case} {res.status} ({took:.1f} s): "
                f"{headline(res)}")
        if self._live is not None:
            self._console.print(line, markup=False, highlight=False)
        else:
            print(line, file=self._out, flush=True)

    def close(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None
            self._out.flush()

    # -- drawn by rich.live ------------------------------------------------------
    def __rich__(self):
        from rich.text import Text

        left = len(self.cases) - self.done
        cur = " ".join(self.current) if self.current else "—"
        return Text(f"{self.done} done, {left} left, ETA {_fmt(self.eta_s())} (from {self.source}), "
                    f"elapsed {_fmt(self.clock() - self.started)} | {cur}", no_wrap=True, overflow="ellipsis")


def _width() -> int:
    try:
        return os.get_terminal_size(1).columns
    except OSError:
        return 100
