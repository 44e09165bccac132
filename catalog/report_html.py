"""`dicomflow report` as one self-contained HTML page: inline SVG charts, no outside assets.

Charts are drawn with matplotlib's object API (``Figure``, no pyplot), so nothing
global is touched and no GUI backend is loaded; the SVG embeds its glyphs as paths
and is written with a fixed hash salt, so the same data gives the same page.
"""

from __future__ import annotations

import html
import io
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from catalog.report_data import ReportData

WIDTH, HEIGHT = 8.0, 3.2
"""Figure size in inches (at matplotlib's 72 pt per inch in SVG)."""

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 60rem; color: #222; }
h1 { margin-bottom: .2rem; } .meta { color: #666; margin-top: 0; }
.totals { display: flex; flex-wrap: wrap; gap: .8rem; margin: 1.2rem 0; }
.total { background: #eef3f8; border-radius: .5rem; padding: .6rem 1rem; min-width: 7rem; }
.total b { display: block; font-size: 1.5rem; }
section { margin: 2rem 0; } figure { margin: 0; } figure svg { max-width: 100%; height: auto; }
table { border-collapse: collapse; margin: .5rem 0; } td, th { padding: .15rem .6rem; }
td.n { text-align: right; } .empty { color: #666; font-style: italic; }
"""


@dataclass(frozen=True)
class Chart:
    """One chart of the page: its anchor, title, SVG (empty: no data) and numbers."""

    id: str
    title: str
    svg: str
    header: tuple[str, ...]
    rows: list[tuple[Any, ...]]


def human_bytes(n: float) -> str:
    """1234567 -> '1.2 MB' (powers of 1000, as disks are sold)."""
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def _svg(draw: Callable[[Any], None], height: float = HEIGHT) -> str:
    """Draw on a new figure with `draw` and return it as an ``<svg>`` element."""
    import matplotlib
    from matplotlib.figure import Figure

    with matplotlib.rc_context({"svg.fonttype": "path", "svg.hashsalt": "dicomflow"}):
        figure = Figure(figsize=(WIDTH, height), layout="constrained")
        draw(figure)
        buffer = io.StringIO()
        figure.savefig(buffer, format="svg", metadata={"Date": None})
    text = buffer.getvalue()
    return text[text.index("<svg") :]


def _date_axis(ax: Any, days: Sequence[date]) -> None:
    """Whole days on the x axis, with half a day of room each side of the first and last."""
    from matplotlib.dates import (
        AutoDateLocator,
        ConciseDateFormatter,
        DateFormatter,
        DayLocator,
        date2num,
    )

    first, last = min(days), max(days)
    ax.set_xlim(date2num(first) - 0.6, date2num(last) + 0.6)
    if (last - first).days < 14:
        ax.xaxis.set_major_locator(DayLocator())
        ax.xaxis.set_major_formatter(DateFormatter("%Y-%m-%d"))
    else:
        locator = AutoDateLocator(maxticks=10)
        ax.xaxis.set_major_locator(locator)
        ax.xaxis.set_major_formatter(ConciseDateFormatter(locator))


def short(label: str, limit: int = 48) -> str:
    """A name cut to fit beside a bar; the table under the chart has it whole."""
    return label if len(label) <= limit else label[: limit - 1] + "…"


def _bars_by_day(
    days: Sequence[date], series: Mapping[str, Sequence[int]]
) -> Callable[[Any], None]:
    """One panel per series, bars per day, sharing the date axis."""

    def draw(figure: Any) -> None:
        axes = figure.subplots(len(series), 1, sharex=True, squeeze=False)[:, 0]
        for ax, (label, values), colour in zip(axes, series.items(), ("C0", "C2"), strict=False):
            ax.bar(days, values, width=0.8, color=colour)
            ax.set_ylabel(label)
            ax.grid(axis="y", alpha=0.3)
        _date_axis(axes[-1], days)

    return draw


def _horizontal(rows: Sequence[tuple[str, int]], xlabel: str) -> Callable[[Any], None]:
    """Bars from the top down in the order given, each labelled with its count."""

    def draw(figure: Any) -> None:
        ax = figure.subplots()
        labels = [short(label) for label, _ in rows][::-1]
        values = [n for _, n in rows][::-1]
        places = range(len(rows))  # positions, not labels: two cut names may read alike
        bars = ax.barh(places, values, color="C0")
        ax.set_yticks(places, labels)
        ax.bar_label(bars, padding=3)
        ax.set_xlabel(xlabel)
        ax.margins(x=0.12)

    return draw


def _stacked_by_day(rows: Sequence[tuple[date, str, int]]) -> Callable[[Any], None]:
    """Files quarantined per day, one colour per reason."""

    def draw(figure: Any) -> None:
        ax = figure.subplots()
        days = sorted({d for d, _, _ in rows})
        reasons = sorted({r for _, r, _ in rows})
        counts = {(d, r): n for d, r, n in rows}
        bottom = [0] * len(days)
        for reason in reasons:
            values = [counts.get((d, reason), 0) for d in days]
            ax.bar(days, values, width=0.8, bottom=bottom, label=reason)
            bottom = [b + v for b, v in zip(bottom, values, strict=True)]
        ax.set_ylabel("files quarantined")
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
        _date_axis(ax, days)

    return draw


def _growth(rows: Sequence[tuple[date, int]]) -> Callable[[Any], None]:
    from matplotlib.ticker import FuncFormatter

    def draw(figure: Any) -> None:
        ax = figure.subplots()
        days = [d for d, _ in rows]
        sizes = [b for _, b in rows]
        ax.fill_between(days, sizes, step="post", alpha=0.25, color="C1")
        ax.step(days, sizes, where="post", color="C1", marker="o")
        ax.set_ylim(bottom=0)
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: human_bytes(v)))
        ax.set_ylabel("archive size")
        ax.grid(axis="y", alpha=0.3)
        _date_axis(ax, days)

    return draw


def _bar_height(rows: Sequence[Any]) -> float:
    return max(1.6, 0.9 + 0.28 * len(rows))


def charts(data: ReportData) -> list[Chart]:
    """The page's charts, in order; a chart without data in the period has no SVG."""
    days = [d for d, _, _ in data.per_day]
    per_day = {
        "instances": [i for _, i, _ in data.per_day],
        "studies": [s for _, _, s in data.per_day],
    }
    planned: list[tuple[str, str, tuple[str, ...], list[Any], Callable[[Any], None], float]] = [
        (
            "per-day",
            "Instances and studies received per day",
            ("day", "instances", "studies"),
            data.per_day,
            _bars_by_day(days, per_day),
            HEIGHT * 1.3,
        ),
        (
            "modalities",
            "Modality mix",
            ("modality", "instances"),
            data.modalities,
            _horizontal(data.modalities, "instances"),
            _bar_height(data.modalities),
        ),
        (
            "sop-classes",
            "Top SOP classes",
            ("SOP class", "instances"),
            data.sop_classes,
            _horizontal(data.sop_classes, "instances"),
            _bar_height(data.sop_classes),
        ),
        (
            "transfer-syntaxes",
            "Transfer syntaxes as stored",
            ("transfer syntax", "instances"),
            data.transfer_syntaxes,
            _horizontal(data.transfer_syntaxes, "instances"),
            _bar_height(data.transfer_syntaxes),
        ),
        (
            "quarantine",
            "Quarantine reasons over time",
            ("day", "reason", "files"),
            data.quarantine,
            _stacked_by_day(data.quarantine),
            HEIGHT,
        ),
        (
            "archive-growth",
            "Archive size growth",
            ("day", "archive size"),
            data.archive_growth,
            _growth(data.archive_growth),
            HEIGHT,
        ),
    ]
    return [
        Chart(id, title, _svg(draw, height) if rows else "", header, rows)
        for id, title, header, rows, draw, height in planned
    ]


def _cell(value: Any) -> str:
    if isinstance(value, int):
        return f'<td class="n">{value:,}</td>'
    return f"<td>{html.escape(str(value))}</td>"


def _section(chart: Chart) -> str:
    if not chart.svg:
        return (
            f'<section id="{chart.id}"><h2>{html.escape(chart.title)}</h2>'
            '<p class="empty">Nothing in this period.</p></section>'
        )
    head = "".join(f"<th>{html.escape(h)}</th>" for h in chart.header)
    body = "".join("<tr>" + "".join(map(_cell, row)) + "</tr>" for row in chart.rows)
    return (
        f'<section id="{chart.id}"><h2>{html.escape(chart.title)}</h2>'
        f'<figure class="chart">{chart.svg}</figure>'
        f"<details><summary>the numbers</summary><table><tr>{head}</tr>{body}</table></details>"
        "</section>"
    )


def _totals(data: ReportData) -> str:
    t = data.totals
    cards = [
        ("patients", f"{t.patients:,}"),
        ("studies", f"{t.studies:,}"),
        ("series", f"{t.series:,}"),
        ("instances", f"{t.instances:,}"),
        ("archive", human_bytes(t.archive_bytes)),
        ("in quarantine", f"{t.in_quarantine:,}"),
    ]
    shown = "".join(f'<div class="total"><b>{v}</b>{html.escape(k)}</div>' for k, v in cards)
    return f'<div class="totals">{shown}</div>'


def render(data: ReportData, source: str, now: datetime | None = None) -> str:
    """The whole page for `data`, read from the catalog at `source`."""
    now = now or datetime.now(UTC)
    period = f"from {data.since.isoformat()} on" if data.since else "all days"
    meta = (
        f"Catalog {html.escape(source)}; generated {now:%Y-%m-%d %H:%M} UTC; charts: {period} "
        "(UTC days); totals: the whole catalog now."
    )
    if data.empty:
        body = (
            '<p class="empty" id="empty">The catalog is empty: nothing has been archived or '
            "quarantined yet. Run <code>dicomflow autoload</code> after files have landed.</p>"
        )
    else:
        body = _totals(data) + "".join(_section(c) for c in charts(data))
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>dicomflow report</title><style>{_CSS}</style></head><body>"
        f'<h1>dicomflow report</h1><p class="meta">{meta}</p>{body}</body></html>\n'
    )
