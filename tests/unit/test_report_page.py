"""The report page from made-up data: sections, charts, escaping, empty states, size; and the data
gathered from a real (SQLite) state store."""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from connectors.state import SqlStateStore
from pls_sync import matching, report_page
from pls_sync.config import load_settings
from pls_sync.ports import AccountState, TierTransition
from pls_sync.report_data import build_report, gather_report_data, tier_flow
from pls_sync.report_page import NEW, ReportData, RunInfo, render_report

REPO = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 12, 5, 9, 30, tzinfo=UTC)
AS_OF = datetime(2026, 12, 4, tzinfo=UTC)
TIERS = (("sales", 80.0), ("success", 60.0), ("self_serve", 0.0))
CHARTS = ("score-distribution", "tier-flow", "match-rate", "channels", "motions")
CALIBRATION = {
    "auc": 0.791,
    "lift_by_decile": [{"lift": 3.9, "low": 3.1, "high": 4.6}, 2.2, 1.4, 1.1, 0.9, 0.7],
    "signal_rates": {
        "Terms of Use viewed": {"with": 0.31, "without": 0.08},
        "7+ active users": {"with": 0.22, "without": 0.09},
        "malformed": {"with": "a lot"},
    },
}


class _Figures(HTMLParser):
    """Figure ids, and those with an ``<svg>`` among their children."""

    def __init__(self) -> None:
        super().__init__()
        self.figures: list[str] = []
        self.with_svg: set[str] = set()
        self._open: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "figure":
            self._open = dict(attrs).get("id") or ""
            self.figures.append(self._open)
        elif tag == "svg" and self._open is not None:
            self.with_svg.add(self._open)

    def handle_endtag(self, tag: str) -> None:
        if tag == "figure":
            self._open = None


def figures(page: str) -> _Figures:
    parser = _Figures()
    parser.feed(page)
    return parser


def abm_row(i: int, **extra: Any) -> dict[str, Any]:
    return {
        "domain": f"acct{i:03d}.com",
        "account": f"acct{i:03d}.com",
        "score": 100 - i,
        "tier": "sales" if i < 5 else "self_serve",
        "active_users": 10,
        "users": 12,
        "motion": "abm",
        "signals": "Viewed pricing 4x in 14 days",
        **extra,
    }


def sample(**changes: Any) -> ReportData:
    """A report of a run over 60 accounts, two CRMs, 30 ABM and 3 unmatched rows."""
    scores = tuple(
        (float(s), "sales" if s >= 80 else "success" if s >= 60 else "self_serve")
        for s in range(0, 120, 2)
    )
    data = ReportData(
        generated_at=NOW,
        tiers=TIERS,
        scores=scores,
        last_run=RunInfo("run-2", "run", "succeeded", NOW - timedelta(hours=1), AS_OF.isoformat()),
        previous_run=RunInfo("run-1", "run", "succeeded", NOW - timedelta(days=1), "2026-12-03"),
        tier_flow={(NEW, "self_serve"): 3, ("self_serve", "sales"): 2, ("sales", "sales"): 8},
        match_counts={
            "salesforce": {
                "matched": 40,
                "ambiguous_resolved": 5,
                "unmatched": 15,
                "crm_records": 90,
            },
            "hubspot": {"matched": 30, "unmatched": 30},
        },
        destination_status={"salesforce": "succeeded", "hubspot": "succeeded"},
        channels={"usage_pql": 20, "usage_no_buyer": 30, "mql_only": 2},
        motions={"self_serve": 40, "sales": 12, "abm": 8},
        abm=tuple(abm_row(i) for i in range(20)),
        abm_total=30,
        unmatched=tuple(
            {
                "destination": "hubspot",
                "domain": f"lost{i}.io",
                "account": f"lost{i}.io",
                "score": 50,
            }
            for i in range(3)
        ),
        unmatched_total=3,
        lists_run_id="run-2",
    )
    return replace(data, **changes)


def test_every_chart_is_a_figure_with_an_svg_and_a_caption() -> None:
    page = render_report(sample())
    found = figures(page)
    assert found.figures == list(CHARTS)
    assert found.with_svg == set(CHARTS)
    assert page.count("<figcaption>") == len(CHARTS)
    assert "salesforce: 45 of 60 accounts matched (75%)" in page
    assert "hubspot: 30 of 60 accounts matched (50%)" in page
    assert "1 of them share the highest score, 118." in page
    for section in ("Score distribution", "Tier flow", "ABM list", "Unmatched accounts"):
        assert f"<h2>{section}</h2>" in page


def test_the_tier_flow_is_also_a_table_of_counts() -> None:
    page = render_report(sample())
    assert "2 changed tier, 3 were scored for the first time (new)" in page
    flow_table = page[page.index('<figure id="tier-flow"') :].split("<table>", 1)[1]
    assert re.search(r"<th>self_serve</th>(<td[^>]*>\d+</td>)*", flow_table)
    assert "<th>→ sales</th>" in flow_table


def test_lists_show_20_rows_and_name_the_command_for_the_rest() -> None:
    page = render_report(sample())
    abm = page[page.index('id="section-abm-list"') : page.index('id="section-unmatched-accounts"')]
    assert abm.count("<tr>") == 21  # header + 20 rows
    assert "The first 20 of 30 rows of run run-2" in abm
    assert "<code>pls-sync lists abm</code>" in abm
    unmatched = page[page.index('id="section-unmatched-accounts"') :]
    assert "The first 3 of 3 rows" in unmatched
    assert "pls-sync lists unmatched" not in unmatched


def test_values_from_users_are_escaped_in_tables_and_charts() -> None:
    evil = "<script>alert(1)</script>"
    data = sample(
        abm=(abm_row(0, domain=f"{evil}.com", signals="R&D <b>team</b>"),),
        abm_total=1,
        channels={evil: 3, "$1M+ deals": 2},
        tier_flow={(evil, "sales"): 1},
        calibration={"signal_rates": {f"{evil} $x$": {"with": 0.5, "without": 0.1}}},
    )
    page = render_report(data)
    assert "<script" not in page
    assert "<b>team" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;.com" in page
    assert "R&amp;D &lt;b&gt;team&lt;/b&gt;" in page
    # A dollar in a label is text, not TeX (matplotlib would otherwise parse it as math).
    assert "$1M+ deals" in page


def test_no_run_yet_renders_a_page_that_says_to_run_first() -> None:
    page = render_report(ReportData(generated_at=NOW))
    assert "no run recorded yet: run <code>pls-sync run</code> first" in page
    assert page.count("pls-sync run</code> first") >= 5  # each section says it
    assert figures(page).figures == []
    assert "run <code>pls-sync calibrate</code>" in page


def test_a_run_without_crm_matches_or_channels_says_so() -> None:
    data = sample(
        match_counts={},
        destination_status={"hubspot": "invalid"},
        channels={},
        tier_flow={},
        abm=(),
        abm_total=0,
    )
    page = render_report(data)
    assert "hubspot: not matched (status invalid)" in page
    assert "the last run recorded no lead channel" in page
    assert "the last run scored no account" in page
    assert "the state store holds no score" in render_report(replace(data, scores=()))
    assert "empty in run run-2" in page
    assert figures(page).with_svg == {"score-distribution", "motions"}


def test_calibration_is_charted_when_given() -> None:
    page = render_report(sample(calibration=CALIBRATION))
    found = figures(page)
    assert {"lift", "signal-rates"} <= found.with_svg
    assert "Backtest AUC of the score: 0.791." in page
    assert "top decile 3.90×" in page
    assert "Terms of Use viewed" in page
    assert "malformed" not in page
    assert "pls-sync calibrate" not in page


def test_without_calibration_the_section_points_at_calibrate() -> None:
    page = render_report(sample())
    section = page[page.index('id="section-calibration"') :]
    assert "run <code>pls-sync calibrate</code>" in section
    assert "<figure" not in section


def test_the_page_loads_nothing_from_elsewhere() -> None:
    page = render_report(sample(calibration=CALIBRATION))
    assert "<script" not in page and "<link" not in page and "@import" not in page
    references = re.findall(r'\b(?:src|href|xlink:href)\s*=\s*"([^"]*)"', page)
    assert references and all(ref.startswith("#") for ref in references)
    assert all(target.startswith("#") for target in re.findall(r"url\(([^)]*)\)", page))
    assert "default-src 'none'" in page


def test_the_page_stays_small_with_many_accounts_and_is_the_same_every_time() -> None:
    many = tuple((float(i % 101), "self_serve") for i in range(20_000))
    data = sample(scores=many, calibration=CALIBRATION)
    page = render_report(data)
    assert len(page.encode()) < 400_000
    assert render_report(data) == page


def test_tier_flow_counts_the_last_runs_moves_and_every_account_that_stayed() -> None:
    before = AS_OF - timedelta(days=7)
    states = {
        "moved": AccountState("moved", 85, "sales", scored_at=AS_OF),
        "stayed": AccountState("stayed", 20, "self_serve", scored_at=AS_OF),
        "new": AccountState("new", 30, "self_serve", scored_at=AS_OF),
        "twice": AccountState("twice", 65, "success", scored_at=AS_OF),
        "old": AccountState("old", 90, "sales", scored_at=before),
    }
    transitions = [
        TierTransition("old", "success", "sales", 90, before),
        TierTransition("moved", "self_serve", "sales", 85, AS_OF),
        TierTransition("new", None, "self_serve", 30, AS_OF),
        TierTransition("twice", "self_serve", "sales", 81, AS_OF),
        TierTransition("twice", "sales", "success", 65, AS_OF),
    ]
    this_run = [t for t in transitions if t.at == AS_OF]  # what the last run recorded
    assert tier_flow(states, this_run) == {
        ("self_serve", "sales"): 1,
        ("self_serve", "self_serve"): 1,
        (NEW, "self_serve"): 1,
        ("self_serve", "success"): 1,
        ("sales", "sales"): 1,  # not scored by the last run: it kept its tier
    }


@pytest.fixture
def store(tmp_path: Path) -> SqlStateStore:
    return SqlStateStore.open(f"sqlite:///{tmp_path / 'state.sqlite'}")


def settings() -> Any:
    return load_settings(REPO / "config" / "pls_sync.yaml", env={})


def record_run(store: SqlStateStore, run_id: str, at: datetime, summary: dict[str, Any]) -> None:
    store.begin_run(run_id, str(summary.get("command", "run")), at)
    store.finish_run(run_id, "succeeded", at + timedelta(minutes=1), summary)


def test_the_data_comes_from_the_last_run_that_wrote(store: SqlStateStore) -> None:
    first, second = AS_OF - timedelta(days=7), AS_OF
    store.save_account_states(
        "r1",
        [AccountState("a.com", 40, "self_serve", scored_at=first)],
        [TierTransition("a.com", None, "self_serve", 40, first)],
    )
    store.save_account_states(
        "r2",
        [
            AccountState("a.com", 85, "sales", scored_at=second),
            AccountState("b.com", 10, "self_serve", scored_at=second),
        ],
        [
            TierTransition("a.com", "self_serve", "sales", 85, second),
            TierTransition("b.com", None, "self_serve", 10, second),
        ],
    )
    summary = {
        "as_of": second.isoformat(),
        "dry_run": False,
        "scoring": {"scored": 2},
        "destinations": {
            "salesforce": {"status": "succeeded", "match": {"matched": 1, "unmatched": 1}},
            "hubspot": {"status": "invalid"},
        },
        "leads": {"channels": {"usage_pql": 1, "usage_no_buyer": 1}, "motions": {"sales": 1}},
    }
    record_run(store, "r1", NOW - timedelta(days=7), {**summary, "as_of": first.isoformat()})
    record_run(store, "r2", NOW - timedelta(hours=2), summary)
    record_run(store, "p3", NOW - timedelta(hours=1), {**summary, "dry_run": True})
    store.save_lists("r2", second, {"abm": [abm_row(1, domain="b.com")], "unmatched": []})

    data = gather_report_data(settings(), store, now=NOW)

    assert data.last_run is not None and data.last_run.run_id == "r2"
    assert data.previous_run is not None and data.previous_run.run_id == "r1"
    assert sorted(data.scores) == [(10.0, "self_serve"), (85.0, "sales")]
    assert data.tier_flow == {("self_serve", "sales"): 1, (NEW, "self_serve"): 1}
    assert data.match_counts["salesforce"]["matched"] == 1
    assert data.destination_status == {"salesforce": "succeeded", "hubspot": "invalid"}
    assert data.channels == {"usage_pql": 1, "usage_no_buyer": 1}
    assert data.abm_total == 1 and data.abm[0]["domain"] == "b.com"
    assert data.lists_run_id == "r2"
    assert ("sales", 80.0) in data.tiers


def test_an_empty_state_store_gives_the_no_run_page(store: SqlStateStore) -> None:
    page = build_report(settings(), store, now=NOW)
    assert "no run recorded yet" in page
    assert figures(page).figures == []


def test_importing_the_report_modules_loads_neither_matplotlib_nor_the_matcher() -> None:
    code = (
        "import sys, pls_sync.report_data; "
        "print(sorted({'matplotlib', 'tldextract', 'sqlalchemy'} & set(sys.modules)))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO
    )
    assert result.stdout.strip() == "[]"


def test_the_page_knows_every_match_status() -> None:
    assert report_page.STATUSES == matching.STATUSES


def test_a_proposed_scoring_file_is_summarised_with_its_changes() -> None:
    changes = [f"signals.s{i}.points: 0 -> {i}" for i in range(14)]
    proposal = {"cv_auc": 0.852, "current_auc": 0.845, "changes": ["<b>x</b>", *changes]}
    page = render_report(sample(calibration={**CALIBRATION, "proposal": proposal}))
    assert "cross-validated AUC 0.852, against 0.845 for the model in use" in page
    listed = page[page.index('<ul id="proposal">') :]
    assert "&lt;b&gt;x&lt;/b&gt;" in listed and "<b>x</b>" not in listed  # escaped
    assert "… and 3 more in the file’s header" in listed
    broken = render_report(sample(calibration={**CALIBRATION, "proposal": {"cv_auc": "x"}}))
    assert 'id="proposal"' not in broken and "Backtest AUC of the score" in broken
