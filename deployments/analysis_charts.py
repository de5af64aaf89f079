"""The deployment page's analysis charts: each condition's measurements against its threshold, as SVG.

One chart per condition of each analysis step run: the values as a line with a dot per measurement
(coloured by its verdict), the threshold as a dashed line, the time since the step started along the
bottom. Each dot carries a ``<title>`` (shown under the pointer, read by screen readers) and the
figure's caption says in words where the condition stands, so nothing is only in the drawing.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from deployments.models import AnalysisMeasurement, StepRun, StepStatus, Verdict

WIDTH, HEIGHT = 600, 130
LEFT, RIGHT, TOP, BOTTOM = 46, 8, 8, 20
PLOT_W, PLOT_H = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM


@dataclass
class Chart:
    key: str
    label: str
    caption: str
    summary: str
    width: int = WIDTH
    height: int = HEIGHT
    left: int = LEFT
    top: int = TOP
    x_end: int = WIDTH - RIGHT
    bottom: int = TOP + PLOT_H
    line: str = ""
    threshold_line: str = ""
    dots: list[dict[str, Any]] = field(default_factory=list)
    value_ticks: list[dict[str, Any]] = field(default_factory=list)
    time_ticks: list[dict[str, Any]] = field(default_factory=list)


def _number(value: float | None) -> str:
    return "no data" if value is None else f"{value:.4g}"


def _chart(run: StepRun, condition: int, rows: list[AnalysisMeasurement], duration: float) -> Chart:
    first = run.started_at
    span = max(duration, max((row.at - first).total_seconds() for row in rows), 1.0)
    values = [row.value for row in rows if row.value is not None]
    thresholds = [row.threshold for row in rows if row.threshold is not None]
    top = max([*values, *thresholds, 0.0]) * 1.15 or 1.0

    def x(row: AnalysisMeasurement) -> float:
        return round(LEFT + PLOT_W * (row.at - first).total_seconds() / span, 1)

    def y(value: float) -> float:
        return round(TOP + PLOT_H * (1 - min(value, top) / top), 1)

    latest = rows[-1]
    breaches = sum(1 for row in rows if row.verdict == Verdict.FAIL)
    inconclusive = sum(1 for row in rows if row.verdict == Verdict.INCONCLUSIVE)
    label = latest.label
    caption = (
        f"{label}: latest {_number(latest.value)} against {_number(latest.threshold)} "
        f"({latest.get_verdict_display()}: {latest.detail}); {len(rows)} measurements, {breaches} breached"
        + (f", {inconclusive} inconclusive" if inconclusive else "")
    )
    chart = Chart(
        key=f"{run.phase}-{run.index}-{condition}",
        label=label,
        caption=caption,
        summary=f"{label} at each measurement over {span:.0f} s, against its threshold (dashed)",
    )
    chart.line = " ".join(f"{x(row)},{y(row.value)}" for row in rows if row.value is not None)
    chart.threshold_line = " ".join(f"{x(row)},{y(row.threshold)}" for row in rows if row.threshold is not None)
    for row in rows:
        offset = (row.at - first).total_seconds()
        chart.dots.append(
            {
                "x": x(row),
                "y": y(row.value if row.value is not None else 0.0),
                "verdict": row.verdict,
                "title": f"{offset:.0f} s ({row.at:%H:%M:%S}): {_number(row.value)}, threshold "
                f"{_number(row.threshold)}, {row.get_verdict_display()} ({row.detail})",
            }
        )
    chart.value_ticks = [{"y": y(top * share), "label": f"{top * share:.3g}"} for share in (0, 0.5, 1)]
    chart.time_ticks = [
        {"x": round(LEFT + PLOT_W * share, 1), "label": f"{span * share:.0f} s"} for share in (0, 0.25, 0.5, 0.75, 1)
    ]
    return chart


def analysis_charts(runs: list[StepRun], steps: list[dict[str, Any]]) -> list[tuple[StepRun, list[Chart]]]:
    """Each analysis step run with its charts (one per condition measured so far), in one query for all."""
    analysed = [run for run in runs if run.kind == "analysis" and run.status != StepStatus.SKIPPED]
    if not analysed:
        return []
    grouped: dict[tuple[int, int], list[AnalysisMeasurement]] = defaultdict(list)
    for row in AnalysisMeasurement.objects.filter(step_run__in=analysed).order_by("at", "id"):
        grouped[(row.step_run_id, row.condition)].append(row)
    charts: list[tuple[StepRun, list[Chart]]] = []
    for run in analysed:
        step: Any = steps[run.index] if run.index < len(steps) else {}
        if run.phase == "rollback" and isinstance(step, dict):
            step = step.get("rollback") or {}
        duration = float(step.get("duration", 0)) if isinstance(step, dict) else 0.0
        conditions = sorted(condition for (pk, condition) in grouped if pk == run.pk)
        charts.append(
            (run, [_chart(run, condition, grouped[(run.pk, condition)], duration) for condition in conditions])
        )
    return charts
