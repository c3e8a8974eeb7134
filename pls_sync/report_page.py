"""``pls-sync report``'s page: one self-contained HTML file with charts, from plain data.

Pure rendering: :func:`render_report` takes a :class:`ReportData` and returns the page as text.
Charts are inline SVG drawn by matplotlib (a bare ``Figure`` saved as SVG: no pyplot, no global
backend state); matplotlib is imported inside the function that draws, so importing this module
stays light. The page loads nothing from the network: no CDN, no external CSS, JS or fonts, and
a Content-Security-Policy that forbids it.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from html import escape
from typing import TYPE_CHECKING, Any

from pls_sync.list_view import LIST_COLUMNS, ListName

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = ["NEW", "NO_RUN", "ReportData", "RunInfo", "render_report"]

NEW = "new"  # the "from" tier of an account scored for the first time
NO_RUN = "no run recorded yet: run `pls-sync run` first"
NO_CALIBRATION = "no calibration result yet: run `pls-sync calibrate`"
LIST_ROWS = 20
_BIN_WIDTH = 5
_PALETTE = (
    "#2f6db5",
    "#e8871e",
    "#4c9a4a",
    "#c94c4c",
    "#6bb3ad",
    "#9b6fa6",
    "#d4a017",
    "#8c6d57",
    "#7f7f7f",
    "#e377c2",
)
# ``pls_sync.matching.STATUSES`` with their colours, spelled out: importing the matcher loads
# tldextract, too heavy for a page (a unit test keeps the two in step).
_STATUS_COLOURS = {
    "matched": "#4c9a4a",
    "unmatched": "#e8871e",
    "ambiguous_resolved": "#9fcf8a",
    "ambiguous_skipped": "#c9b037",
    "conflict_lost": "#c94c4c",
}
STATUSES = tuple(_STATUS_COLOURS)
_MATCHED_STATUSES = ("matched", "ambiguous_resolved")  # a record was chosen
_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;
margin:0 auto;max-width:1100px;padding:1.5rem;color:#1d2330;background:#fff;line-height:1.4}
h1{margin:0 0 .3rem}h2{margin-top:2rem;border-bottom:1px solid #d8dce3;padding-bottom:.2rem}
figure{margin:1rem 0}figure svg{max-width:100%;height:auto}
figcaption{color:#4a5160;font-size:.92rem}
table{border-collapse:collapse;font-size:.88rem;margin:.5rem 0;width:100%}
th,td{border:1px solid #d8dce3;padding:.25rem .45rem;text-align:left;vertical-align:top}
th{background:#f2f4f7}td.n{text-align:right;font-variant-numeric:tabular-nums}
.empty{color:#6b7280;font-style:italic}.meta{color:#4a5160}
code{background:#f2f4f7;padding:0 .2rem;border-radius:3px}
"""
# Nothing may load from elsewhere: inline styles only, no scripts, no fetches.
_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"


@dataclass(frozen=True, slots=True)
class RunInfo:
    """The run the page describes, as the state store recorded it."""

    run_id: str
    command: str
    status: str
    started_at: datetime
    as_of: str | None = None


@dataclass(frozen=True, slots=True)
class ReportData:
    """Everything the page shows, as plain values; :mod:`pls_sync.report_data` gathers it.

    ``scores`` holds each account's current ``(score, tier)``; ``tiers`` the model's tiers as
    ``(name, lower bound)``, highest first; ``tier_flow`` counts accounts by ``(tier before,
    tier after)`` the last run (``NEW`` before: first scored then); ``match_counts`` each CRM's
    accounts by match status; ``destination_status`` the status of every destination of the run;
    ``abm`` and ``unmatched`` the lists' first rows, with ``*_total`` their whole length.
    ``calibration`` (from ``pls-sync calibrate``) may hold ``lift_by_decile`` (a sequence, top
    decile first, of lifts or of mappings with ``lift`` and optional ``low``/``high``),
    ``signal_rates`` (signal -> mapping with ``with`` and ``without`` conversion rates, 0-1)
    and ``auc``.
    """

    generated_at: datetime
    tiers: tuple[tuple[str, float], ...] = ()
    scores: tuple[tuple[float, str], ...] = ()
    last_run: RunInfo | None = None
    previous_run: RunInfo | None = None
    tier_flow: Mapping[tuple[str, str], int] = field(default_factory=dict)
    match_counts: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    destination_status: Mapping[str, str] = field(default_factory=dict)
    channels: Mapping[str, int] = field(default_factory=dict)
    motions: Mapping[str, int] = field(default_factory=dict)
    # Fit beside engagement: accounts by tier, then fit segment, in the last run.
    fit_by_tier: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    fit_segments: Sequence[str] = ()  # the model's segments, largest first: the column order
    abm: Sequence[Mapping[str, Any]] = ()
    abm_total: int = 0
    unmatched: Sequence[Mapping[str, Any]] = ()
    unmatched_total: int = 0
    lists_run_id: str | None = None
    calibration: Mapping[str, Any] | None = None


def render_report(data: ReportData) -> str:
    """The whole page as one HTML string (UTF-8 text, nothing external to load)."""
    colours = _tier_colours(data)
    sections = [
        _header(data),
        _section("Score distribution", _score_figure(data, colours)),
        _section("Tier flow", _flow_figure(data, colours)),
        _section("Match rate per CRM", _match_figure(data)),
        _section("Channels and motions", _channels_figures(data)),
        _section("Fit and engagement", _fit_table(data)),
        _section("ABM list", _list_table(data, ListName.ABM)),
        _section("Unmatched accounts", _list_table(data, ListName.UNMATCHED)),
        _section("Calibration", _calibration(data)),
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>pls-sync report</title><style>{_CSS}</style></head>\n<body>\n"
        + "\n".join(sections)
        + "\n</body></html>\n"
    )


# --- page parts -------------------------------------------------------------------------------


def _header(data: ReportData) -> str:
    generated = f"Generated {escape(data.generated_at.isoformat(timespec='seconds'))}."
    run = data.last_run
    if run is None:
        described = f'<p class="empty">{_code(NO_RUN)}</p>'
    else:
        described = (
            f'<p class="meta">Last run <code>{escape(run.run_id)}</code> '
            f"({escape(run.command)}, as of {escape(run.as_of or '?')}): "
            f"<strong>{escape(run.status)}</strong>, started "
            f"{escape(run.started_at.isoformat(timespec='seconds'))}"
            + _previous(data.previous_run)
            + ".</p>"
        )
    return f'<header><h1>pls-sync report</h1><p class="meta">{generated}</p>{described}</header>'


def _previous(run: RunInfo | None) -> str:
    if run is None:
        return ""
    return f"; the run before: <code>{escape(run.run_id)}</code> as of {escape(run.as_of or '?')}"


def _section(title: str, body: str) -> str:
    anchor = "section-" + title.lower().replace(" ", "-")
    return f'<section id="{escape(anchor)}"><h2>{escape(title)}</h2>\n{body}\n</section>'


def _figure(figure_id: str, svg: str, caption: str) -> str:
    return (
        f'<figure id="{escape(figure_id)}">{svg}<figcaption>{escape(caption)}</figcaption></figure>'
    )


def _empty(message: str) -> str:
    return f'<p class="empty">{_code(message)}</p>'


def _code(message: str) -> str:
    """``message`` escaped, its backquoted commands as ``<code>``."""
    parts = escape(message).split("`")
    return "".join(f"<code>{part}</code>" if i % 2 else part for i, part in enumerate(parts))


def _score_figure(data: ReportData, colours: Mapping[str, str]) -> str:
    if not data.scores:
        return _empty(NO_RUN if data.last_run is None else "the state store holds no score")
    scores = data.scores
    highest = max(score for score, _tier in scores)
    top = max(100, int(highest))
    svg = _chart("score-distribution", 3.4, lambda ax: _draw_scores(ax, data, colours, top))
    bounds = ", ".join(f"{name} ≥ {bound:g}" for name, bound in data.tiers if bound > 0)
    # Ties at the top leave reps no order inside the block: say how big it is.
    at_top = sum(1 for score, _tier in scores if score == highest)
    caption = (
        f"Current scores of {len(scores):,} accounts in bins of {_BIN_WIDTH} points, coloured "
        f"by tier; dashed lines: tier bounds ({bounds or 'none'}). "
        f"{at_top:,} of them share the highest score, {highest:g}."
    )
    return _figure("score-distribution", svg, caption)


def _flow_figure(data: ReportData, colours: Mapping[str, str]) -> str:
    if data.last_run is None:
        return _empty(NO_RUN)
    if not data.tier_flow:
        return _empty("the last run scored no account")
    before, after = _flow_axes(data)
    svg = _chart(
        "tier-flow",
        1.2 + 0.45 * len(before),
        lambda ax: _draw_flow(ax, data.tier_flow, before, after, colours),
    )
    moved = sum(n for (a, b), n in data.tier_flow.items() if a != b and a != NEW)
    new = sum(n for (a, _b), n in data.tier_flow.items() if a == NEW)
    caption = (
        f"Accounts by tier before the last run (rows) and after it (colours): {moved:,} changed "
        f"tier, {new:,} were scored for the first time ({NEW})."
    )
    return _figure("tier-flow", svg, caption) + _flow_table(data.tier_flow, before, after)


def _flow_axes(data: ReportData) -> tuple[list[str], list[str]]:
    order = [name for name, _bound in data.tiers]
    seen_before = {a for a, _b in data.tier_flow}
    seen_after = {b for _a, b in data.tier_flow}
    before = [NEW] if NEW in seen_before else []
    before += [t for t in order if t in seen_before] + sorted(seen_before - set(order) - {NEW})
    after = [t for t in order if t in seen_after] + sorted(seen_after - set(order))
    return before, after


def _flow_table(flow: Mapping[tuple[str, str], int], before: list[str], after: list[str]) -> str:
    head = "".join(f"<th>→ {escape(b)}</th>" for b in after)
    rows = "".join(
        f"<tr><th>{escape(a)}</th>"
        + "".join(f'<td class="n">{flow.get((a, b), 0):,}</td>' for b in after)
        + "</tr>"
        for a in before
    )
    return f"<table><tr><th>before \\ after</th>{head}</tr>{rows}</table>"


def _match_figure(data: ReportData) -> str:
    if data.last_run is None:
        return _empty(NO_RUN)
    notes = [
        f"{name}: not matched (status {status})"
        for name, status in data.destination_status.items()
        if name not in data.match_counts
    ]
    if not data.match_counts:
        return _empty("; ".join(notes) or "the last run had no CRM destination")
    rates = []
    for name, counts in data.match_counts.items():
        matched, total = _matched(counts), _accounts(counts)
        rate = f"{matched / total:.0%}" if total else "n/a"
        rates.append(f"{name}: {matched:,} of {total:,} accounts matched ({rate})")
    svg = _chart("match-rate", 1.3 + 0.5 * len(data.match_counts), lambda ax: _draw_match(ax, data))
    return _figure("match-rate", svg, "; ".join(rates + notes) + ".")


def _matched(counts: Mapping[str, int]) -> int:
    return sum(int(counts.get(status, 0)) for status in _MATCHED_STATUSES)


def _accounts(counts: Mapping[str, int]) -> int:
    return sum(int(counts.get(status, 0)) for status in STATUSES)


def _channels_figures(data: ReportData) -> str:
    if data.last_run is None:
        return _empty(NO_RUN)
    return "\n".join(
        (
            _counts_figure("channels", data.channels, "lead channel"),
            _counts_figure("motions", data.motions, "sales motion"),
        )
    )


def _counts_figure(figure_id: str, counts: Mapping[str, int], what: str) -> str:
    if not counts:
        return _empty(f"the last run recorded no {what}")
    svg = _chart(figure_id, 1.0 + 0.38 * len(counts), lambda ax: _draw_counts(ax, counts))
    total = sum(counts.values())
    return _figure(figure_id, svg, f"Accounts by {what} in the last run ({total:,}).")


def _fit_table(data: ReportData) -> str:
    """Accounts by engagement (tier, rows) and fit (segment, columns), as the last run saw."""
    if data.last_run is None:
        return _empty(NO_RUN)
    if not data.fit_by_tier:
        return _empty("no fit segments in the last run (add fit: to the scoring file)")
    tiers = [name for name, _bound in data.tiers if name in data.fit_by_tier]
    tiers += [name for name in data.fit_by_tier if name not in tiers]
    segments: dict[str, int] = {}
    for counts in data.fit_by_tier.values():
        for segment, count in counts.items():
            segments[segment] = segments.get(segment, 0) + count
    columns = [name for name in data.fit_segments if name in segments]
    columns += sorted(
        (name for name in segments if name not in columns), key=lambda n: -segments[n]
    )
    head = "<th>tier / segment</th>" + "".join(f"<th>{escape(c)}</th>" for c in columns)
    body = "".join(
        f"<tr><td>{escape(tier)}</td>"
        + "".join(_cell(data.fit_by_tier[tier].get(c, 0)) for c in columns)
        + "</tr>"
        for tier in tiers
    )
    note = (
        "Engagement (the PQA tier) against fit (the company's size segment): the accounts "
        "worth a rep's time are high on both."
    )
    return f'<p class="meta">{escape(note)}</p><table id="fit"><tr>{head}</tr>{body}</table>'


def _list_table(data: ReportData, which: ListName) -> str:
    rows, total = (
        (data.abm, data.abm_total)
        if which is ListName.ABM
        else (data.unmatched, data.unmatched_total)
    )
    if data.lists_run_id is None:
        return _empty(NO_RUN)
    if not rows:
        return _empty(f"empty in run {data.lists_run_id}")
    columns = LIST_COLUMNS[which]
    head = "".join(f"<th>{escape(column)}</th>" for column in columns)
    body = "".join(
        "<tr>" + "".join(_cell(row.get(column)) for column in columns) + "</tr>"
        for row in rows[:LIST_ROWS]
    )
    shown = min(len(rows), LIST_ROWS)
    more = f" The whole list: `pls-sync lists {which.value}`." if total > shown else ""
    note = _code(f"The first {shown:,} of {total:,} rows of run {data.lists_run_id}.{more}")
    return f'<p class="meta">{note}</p><table><tr>{head}</tr>{body}</table>'


def _cell(value: Any) -> str:
    if value is None:
        return "<td></td>"
    if isinstance(value, int | float) and not isinstance(value, bool):
        return f'<td class="n">{escape(f"{value:g}")}</td>'
    return f"<td>{escape(str(value))}</td>"


def _calibration(data: ReportData) -> str:
    result = data.calibration
    if not result:
        return _empty(NO_CALIBRATION)
    parts = []
    auc = result.get("auc")
    if isinstance(auc, int | float):
        parts.append(f'<p class="meta">Backtest AUC of the score: {escape(f"{auc:.3f}")}.</p>')
    fitted = result.get("fitted")
    fitted_auc = fitted.get("cv_auc") if isinstance(fitted, dict) else None
    if isinstance(fitted_auc, int | float):
        parts.append(
            '<p class="meta">A logistic regression on the same inputs, cross-validated: AUC '
            f"{escape(f'{fitted_auc:.3f}')}.</p>"
        )
    parts.extend(_proposal(result.get("proposal")))
    lifts = _lifts(result.get("lift_by_decile") or ())
    if lifts:
        svg = _chart("lift", 3.2, lambda ax: _draw_lift(ax, lifts))
        caption = (
            f"Conversion lift by score decile (1 = the top tenth of scores; 1.0 = the average "
            f"rate); top decile {lifts[0][0]:.2f}×, with confidence intervals where given."
        )
        parts.append(_figure("lift", svg, caption))
    rates = _signal_rates(result.get("signal_rates") or {})
    if rates:
        svg = _chart("signal-rates", 1.2 + 0.42 * len(rates), lambda ax: _draw_rates(ax, rates))
        caption = "Conversion rate of accounts with each signal against those without it."
        parts.append(_figure("signal-rates", svg, caption))
    return "\n".join(parts) or _empty(NO_CALIBRATION)


def _proposal(raw: Any) -> list[str]:
    """The proposed scoring file's figures and changes (``calibrate --propose``), if any."""
    if not isinstance(raw, Mapping):
        return []
    cv_auc, current = raw.get("cv_auc"), raw.get("current_auc")
    if not isinstance(cv_auc, int | float) or not isinstance(current, int | float):
        return []
    head = (
        f"The proposed scoring file (calibrate --propose): cross-validated AUC {cv_auc:.3f}, "
        f"against {current:.3f} for the model in use on the same accounts."
    )
    changes = [str(c) for c in raw.get("changes") or () if isinstance(c, str)]
    items = "".join(f"<li>{escape(change)}</li>" for change in changes[:_PROPOSAL_LINES])
    more = len(changes) - _PROPOSAL_LINES
    tail = f"<li>{escape(f'… and {more} more in the file’s header')}</li>" if more > 0 else ""
    listed = f'<ul id="proposal">{items}{tail}</ul>' if items else ""
    return [f'<p class="meta">{escape(head)}</p>{listed}']


_PROPOSAL_LINES = 12


def _lifts(raw: Any) -> list[tuple[float, float | None, float | None]]:
    """``(lift, low, high)`` per decile from numbers or mappings; anything else is left out."""
    out: list[tuple[float, float | None, float | None]] = []
    for item in raw if isinstance(raw, Sequence) and not isinstance(raw, str) else ():
        if isinstance(item, int | float):
            out.append((float(item), None, None))
        elif isinstance(item, Mapping) and isinstance(item.get("lift"), int | float):
            low, high = item.get("low"), item.get("high")
            out.append(
                (
                    float(item["lift"]),
                    float(low) if isinstance(low, int | float) else None,
                    float(high) if isinstance(high, int | float) else None,
                )
            )
    return out


def _signal_rates(raw: Any) -> list[tuple[str, float, float]]:
    """``(signal, rate with, rate without)``, highest rate with first."""
    if not isinstance(raw, Mapping):
        return []
    out = [
        (str(name), float(rates["with"]), float(rates["without"]))
        for name, rates in raw.items()
        if isinstance(rates, Mapping)
        and isinstance(rates.get("with"), int | float)
        and isinstance(rates.get("without"), int | float)
    ]
    return sorted(out, key=lambda row: (-row[1], row[0]))


# --- charts -------------------------------------------------------------------------------------


def _chart(figure_id: str, height: float, draw: Callable[[Axes], None]) -> str:
    """An inline ``<svg>`` element of one axes drawn by ``draw`` (text kept as text)."""
    import matplotlib
    from matplotlib.figure import Figure

    with matplotlib.rc_context(
        {
            "svg.fonttype": "none",
            # Stable element ids, and distinct between the page's charts.
            "svg.hashsalt": figure_id,
            # Labels come from users and config: a "$" is a dollar, not TeX.
            "text.parse_math": False,
            "font.size": 10,
            "font.family": "sans-serif",
            "axes.spines.top": False,
            "axes.spines.right": False,
        }
    ):
        figure = Figure(figsize=(9, height), layout="constrained")
        draw(figure.add_subplot())
        buffer = io.BytesIO()
        figure.savefig(buffer, format="svg", metadata={"Date": None})
    text = buffer.getvalue().decode("utf-8")
    return text[text.index("<svg") :].strip()


def _draw_scores(ax: Axes, data: ReportData, colours: Mapping[str, str], top: int) -> None:
    edges = list(range(0, top + _BIN_WIDTH, _BIN_WIDTH))
    tiers = [name for name, _bound in data.tiers]
    tiers += sorted({tier for _score, tier in data.scores} - set(tiers))
    base = [0] * len(edges)
    for tier in reversed(tiers):
        counts = [0] * len(edges)
        for score, name in data.scores:
            if name == tier:
                counts[min(max(int(score), 0) // _BIN_WIDTH, len(edges) - 1)] += 1
        if not any(counts):
            continue
        ax.bar(
            edges,
            counts,
            width=_BIN_WIDTH,
            align="edge",
            bottom=base,
            color=colours.get(tier, "#7f7f7f"),
            edgecolor="white",
            linewidth=0.5,
            label=tier,
        )
        base = [b + c for b, c in zip(base, counts, strict=True)]
    for name, bound in data.tiers:
        if bound > 0:
            ax.axvline(bound, linestyle="--", color="#333333", linewidth=1)
            ax.annotate(
                f" {name} ≥ {bound:g}",
                (bound, 1),
                xycoords=("data", "axes fraction"),
                va="top",
                fontsize=9,
            )
    ax.set_xlim(0, top + _BIN_WIDTH)
    ax.set_xlabel("score")
    ax.set_ylabel("accounts")
    # Stacked from the lowest tier up: list the legend highest tier first.
    handles, labels = ax.get_legend_handles_labels()
    ax.legend(
        handles[::-1],
        labels[::-1],
        title="tier",
        frameon=False,
        loc="center left",
        bbox_to_anchor=(1.0, 0.5),
    )


def _draw_flow(
    ax: Axes,
    flow: Mapping[tuple[str, str], int],
    before: list[str],
    after: list[str],
    colours: Mapping[str, str],
) -> None:
    rows = list(range(len(before)))
    left = [0] * len(before)
    for tier in after:
        widths = [flow.get((a, tier), 0) for a in before]
        bars = ax.barh(
            rows, widths, left=left, color=colours.get(tier, "#7f7f7f"), label=f"→ {tier}"
        )
        ax.bar_label(bars, labels=[f"{w:,}" if w else "" for w in widths], label_type="center")
        left = [x + w for x, w in zip(left, widths, strict=True)]
    ax.set_yticks(rows, before)
    ax.invert_yaxis()
    ax.set_xlabel("accounts")
    ax.legend(frameon=False, loc="center left", bbox_to_anchor=(1.0, 0.5))


def _draw_match(ax: Axes, data: ReportData) -> None:
    names = list(data.match_counts)
    rows = list(range(len(names)))
    left = [0] * len(names)
    for status in STATUSES:
        widths = [int(data.match_counts[name].get(status, 0)) for name in names]
        if not any(widths):
            continue
        ax.barh(
            rows,
            widths,
            left=left,
            color=_STATUS_COLOURS.get(status, "#7f7f7f"),
            label=status.replace("_", " "),
        )
        left = [x + w for x, w in zip(left, widths, strict=True)]
    for row, name in enumerate(names):
        counts = data.match_counts[name]
        total = _accounts(counts)
        rate = f" {_matched(counts) / total:.0%} matched" if total else " no accounts"
        ax.annotate(rate, (left[row], row), va="center", fontsize=9)
    ax.set_yticks(rows, names)
    ax.invert_yaxis()
    ax.set_xlim(0, max(left + [1]) * 1.18)
    ax.set_xlabel("accounts")
    ax.legend(frameon=False, loc="center left", bbox_to_anchor=(1.0, 0.5))


def _draw_counts(ax: Axes, counts: Mapping[str, int]) -> None:
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    names = [name.replace("_", " ") for name, _n in ranked]
    values = [n for _name, n in ranked]
    bars = ax.barh(range(len(names)), values, color=_PALETTE[0])
    ax.bar_label(bars, labels=[f" {v:,}" for v in values])
    ax.set_yticks(range(len(names)), names)
    ax.invert_yaxis()
    ax.set_xlim(0, max(values + [1]) * 1.12)
    ax.set_xlabel("accounts")


def _draw_lift(ax: Axes, lifts: list[tuple[float, float | None, float | None]]) -> None:
    deciles = list(range(1, len(lifts) + 1))
    ax.bar(deciles, [lift for lift, _low, _high in lifts], color=_PALETTE[0])
    intervals = [
        (decile, lift, low, high)
        for decile, (lift, low, high) in zip(deciles, lifts, strict=True)
        if low is not None and high is not None
    ]
    if intervals:
        ax.errorbar(
            [decile for decile, *_rest in intervals],
            [lift for _d, lift, _low, _high in intervals],
            yerr=[
                [max(lift - low, 0.0) for _d, lift, low, _high in intervals],
                [max(high - lift, 0.0) for _d, lift, _low, high in intervals],
            ],
            fmt="none",
            ecolor="#1d2330",
            capsize=3,
        )
    ax.axhline(1.0, linestyle="--", color="#333333", linewidth=1)
    ax.set_xticks(deciles)
    ax.set_xlabel("score decile (1 = highest scores)")
    ax.set_ylabel("lift (× average conversion)")


def _draw_rates(ax: Axes, rates: list[tuple[str, float, float]]) -> None:
    rows = list(range(len(rates)))
    height = 0.4
    ax.barh(
        [r - height / 2 for r in rows],
        [100 * with_ for _n, with_, _w in rates],
        height=height,
        color=_PALETTE[0],
        label="with the signal",
    )
    ax.barh(
        [r + height / 2 for r in rows],
        [100 * without for _n, _w, without in rates],
        height=height,
        color=_PALETTE[8],
        label="without it",
    )
    ax.set_yticks(rows, [name for name, _w, _wo in rates])
    ax.invert_yaxis()
    ax.set_xlabel("conversion rate (%)")
    ax.legend(frameon=False, loc="lower right")


def _tier_colours(data: ReportData) -> dict[str, str]:
    """One colour per tier, the model's tiers first (highest first), then any other seen."""
    names = [name for name, _bound in data.tiers]
    seen = {tier for _score, tier in data.scores} | {t for pair in data.tier_flow for t in pair}
    names += sorted(seen - set(names) - {NEW})
    return {name: _PALETTE[i % len(_PALETTE)] for i, name in enumerate(names)}
