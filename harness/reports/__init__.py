"""Reports rendered from the results store.

``write_report(store_path, out_path, baselines=None)`` writes one
self-contained HTML page (inline CSS and SVG, no scripts, nothing fetched);
``render_report`` returns the same page as a string. jinja2 and matplotlib are
imported only when a report is rendered.
"""

from harness.reports.html import build_context, render_report, write_report

__all__ = ["build_context", "render_report", "write_report"]
