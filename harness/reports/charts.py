"""Charts for the report: matplotlib SVG, inlined in the page (nothing fetched, no JavaScript)."""

from __future__ import annotations

import io
import itertools
import re

from harness.vocab import device_rank

# Beyond this spread a linear axis flattens the slow series (CPU at ~10 img/s
# beside documented NPU figures at ~1000) into the floor.
LOG_Y_SPREAD = 20.0


def chart_svg(model: str, series: list[dict], *, quantity: str = "throughput",
               unit: str = "images/s") -> str | None:
    """A quantity vs batch size as inline SVG; measured solid, documented dashed."""
    if not series:
        return None
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator, ScalarFormatter

    # Figure + an explicit Agg canvas keep pyplot's global state (and any GUI
    # backend the caller chose) out of it.
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": f"harness-{model}",
                                "font.size": 9}):
        fig = Figure(figsize=(7.5, 4.0), layout="constrained")
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        palette = matplotlib.color_sequences["tab10"]
        devices = sorted({s["device"] for s in series}, key=device_rank)
        color = {d: palette[i % len(palette)] for i, d in enumerate(devices)}
        markers = itertools.cycle("osD^vP*X")
        values, sizes = [], set()
        for s in series:
            xs, ys = zip(*s["points"])
            values += ys
            sizes.update(xs)
            # '$' would start matplotlib mathtext inside a label
            label = s["label"].replace("$", r"\$")
            if s["documented"]:
                ax.plot(xs, ys, linestyle="--", marker="x", color=color[s["device"]], label=label, alpha=0.85)
            else:
                ax.plot(xs, ys, linestyle="-", marker=next(markers), color=color[s["device"]], label=label,
                        linewidth=2)
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_locator(FixedLocator(sorted(sizes)))
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_locator(NullLocator())
        positive = [v for v in values if v > 0]
        if positive and max(positive) / min(positive) > LOG_Y_SPREAD:
            ax.set_yscale("log")
            ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
            ax.set_ylabel(f"{quantity}, {unit} (log scale)")
        else:
            ax.set_ylim(bottom=0)
            ax.set_ylabel(f"{quantity}, {unit}")
        ax.set_xlabel("batch size (log2 scale)")
        ax.set_title(f"{model}: {quantity} vs batch size")
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, frameon=False,
                  title="solid: measured\ndashed: documented" if any(x["documented"] for x in series) else None,
                  title_fontsize=8, alignment="left")
        buf = io.StringIO()
        fig.savefig(buf, format="svg",
                    metadata={"Date": None, "Creator": None, "Type": None, "Format": None})
    svg = buf.getvalue()
    svg = svg[svg.index("<svg"):]
    # the page sizes the chart; keep the viewBox, drop the fixed pt size
    return re.sub(r'<svg([^>]*?) width="[^"]*" height="[^"]*"', r'<svg\1 class="chart"', svg, count=1)
