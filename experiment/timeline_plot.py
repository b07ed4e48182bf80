"""timeline.png: per run, the canary's error rate over time with the threshold and the key moments."""

from __future__ import annotations

import math
from collections.abc import Sequence
from io import BytesIO
from pathlib import Path
from typing import Any

from rollguard.experiment.records import RunRecord
from rollguard.steps.output_files import write_atomically

MAX_PANELS = 12

_MOMENTS = (
    ("first_breach", "first breach", "tab:orange", "--"),
    ("alert_firing", "alert fired", "tab:purple", "-."),
    ("verdict_at", "verdict", "tab:blue", ":"),
    ("traffic_cut", "traffic cut", "tab:green", "-"),
    ("threshold_rule_decided_at", "plain threshold rule would decide", "tab:gray", (0, (1, 3))),
)


def plot_timeline(records: Sequence[RunRecord], threshold: float, path: Path, *, series_key: str = "series") -> Path:
    """Draw one panel per run (the first MAX_PANELS) and save a PNG; returns the path.

    Each record's `extra[series_key]` is a list of [unix_time, canary_error_rate] pairs from
    Prometheus. Times are shown in seconds since the fault started, so runs line up.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = list(records)[:MAX_PANELS]
    columns = 1 if len(shown) <= 3 else 2
    rows = max(1, math.ceil(len(shown) / columns))
    figure, axes = plt.subplots(rows, columns, figsize=(7 * columns, 2.6 * rows + 1.2), squeeze=False)
    for index, axis in enumerate(axes.flat):
        if index >= len(shown):
            axis.set_visible(False)
            continue
        _draw_run(axis, shown[index], threshold, series_key)
    legend: dict[str, Any] = {}
    for axis in axes.flat:
        for handle, label in zip(*axis.get_legend_handles_labels(), strict=True):
            legend.setdefault(label, handle)
    figure.legend(list(legend.values()), list(legend), loc="lower center", ncol=min(4, len(legend) or 1), frameon=False,
                  fontsize=8)
    title = "Canary error rate and rollback moments (t = 0: fault starts)"
    if len(records) > MAX_PANELS:
        title += f" — first {MAX_PANELS} of {len(records)} runs"
    figure.suptitle(title)
    figure.tight_layout(rect=(0, 0.1 if rows < 3 else 0.05, 1, 0.96))
    path.parent.mkdir(parents=True, exist_ok=True)
    png = BytesIO()
    figure.savefig(png, format="png", dpi=110)
    plt.close(figure)
    write_atomically(path, png.getvalue())
    return path


def _draw_run(axis: object, record: RunRecord, threshold: float, series_key: str) -> None:
    origin = record.fault_start or record.extra.get("release_start") or 0.0
    series = record.extra.get(series_key) or []
    threshold = float(record.extra.get("threshold", threshold))
    in_ms = record.extra.get("series_unit") == "ms"
    scale, unit, name = (1.0, "ms", "canary p99 latency (ms)") if in_ms else (100.0, "%", "canary error rate (%)")
    times = [float(t) - origin for t, _ in series]
    values = [float(v) * scale for _, v in series]
    axis.plot(times, values, color="tab:red", linewidth=1.6, label=name)  # type: ignore[attr-defined]
    shown = f"{threshold:g} ms" if in_ms else f"{threshold:.1%}"
    axis.axhline(threshold * scale, color="grey", linestyle="--", linewidth=1, label=f"threshold {shown}")  # type: ignore[attr-defined]
    axis.axvline(0, color="black", linewidth=1, label="fault starts")  # type: ignore[attr-defined]
    for attribute, label, colour, style in _MOMENTS:
        moment = getattr(record, attribute)
        if moment is not None:
            axis.axvline(moment - origin, color=colour, linestyle=style, linewidth=1.4, label=label)  # type: ignore[attr-defined]
    if record.traffic_cut is not None:
        axis.axvspan(0, record.traffic_cut - origin, color="tab:red", alpha=0.08)  # type: ignore[attr-defined]
    cut = record.fault_to_cut_s()
    summary = f"cut {cut:.1f} s after fault" if cut is not None else "no cut"
    axis.set_title(  # type: ignore[attr-defined]
        f"run {record.run} · {record.scenario} · {record.outcome.replace('_', ' ')} · {summary} · "
        f"{record.failed_requests} failed requests",
        fontsize=9,
    )
    axis.set_xlabel("seconds since the fault started", fontsize=8)  # type: ignore[attr-defined]
    axis.set_ylabel(unit, fontsize=8)  # type: ignore[attr-defined]
    axis.set_ylim(bottom=0)  # type: ignore[attr-defined]
    axis.grid(alpha=0.3)  # type: ignore[attr-defined]
