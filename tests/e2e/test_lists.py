"""``pls-sync lists``: the whole ABM, unmatched and stale lists the last run kept.

The state store is seeded directly with ``save_lists`` (what the service saves at the end of a
run), then read back through the CLI in every format.
"""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from connectors.state import SqlStateStore
from tests.e2e.conftest import Workdir

SAVED_AT = datetime(2026, 11, 22, 6, 0, tzinfo=UTC)
ABM = [
    {
        "domain": "beta.io",
        "account": "beta.io",
        "score": 72,
        "tier": "success",
        "active_users": 6,
        "users": 9,
        "motion": "abm",
        "signals": "6 active users",
    },
    {
        "domain": "acme.com",
        "account": "acme.com",
        "score": 91,
        "tier": "sales",
        "active_users": 12,
        "users": 15,
        "motion": "abm",
        "signals": '=HYPERLINK("http://evil.example","click"); pricing page viewed',
    },
    {
        "domain": "alpha.dev",
        "account": "alpha.dev",
        "score": 72,
        "tier": "success",
        "active_users": 5,
        "users": 5,
        "motion": "abm",
        "signals": "",
    },
]
UNMATCHED = [
    {
        "destination": d,
        "domain": domain,
        "account": domain,
        "score": score,
        "tier": "sales",
        "users": 10,
        "active_users": 8,
    }
    for d in ("salesforce", "hubspot")
    for domain, score in (("gamma.co", 85), ("delta.co", 88))
]
STALE = [
    {
        "destination": "salesforce",
        "domain": "acme.com",
        "record_id": "001A",
        "qualified_since": "2026-09-01T00:00:00Z",
        "last_activity": None,
        "score": 91,
        "tier": "sales",
    }
]


@pytest.fixture
def seeded(workdir: Workdir, monkeypatch: pytest.MonkeyPatch) -> SqlStateStore:
    """A state store holding the three lists of run ``run-7``."""
    monkeypatch.setenv("PLS_SYNC_STATE_URL", workdir.state_url)
    store = SqlStateStore.open(workdir.state_url)
    store.save_lists("run-7", SAVED_AT, {"abm": ABM, "unmatched": UNMATCHED, "stale": STALE})
    return store


def parsed_csv(output: str) -> list[dict[str, str]]:
    """Rows of CSV text."""
    return list(csv.DictReader(io.StringIO(output)))


def test_a_table_lists_every_row_highest_score_first_and_names_the_run(
    workdir: Workdir, seeded: SqlStateStore
) -> None:
    result = workdir.invoke("lists", "abm")

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "abm list of run run-7 at 2026-11-22T06:00:00Z: 3 rows"
    assert lines[1].split() == [
        "domain",
        "score",
        "tier",
        "active_users",
        "users",
        "motion",
        "signals",
    ]  # account only repeats the domain here: left out of the table
    assert [line.split()[0] for line in lines[2:]] == ["acme.com", "alpha.dev", "beta.io"]


def test_csv_on_stdout_is_the_data_alone_and_every_cell_is_guarded(
    workdir: Workdir, seeded: SqlStateStore
) -> None:
    result = workdir.invoke("lists", "abm", "--format", "csv")

    assert result.exit_code == 0, result.output
    rows = parsed_csv(result.stdout)
    assert list(rows[0]) == [
        "domain",
        "account",
        "score",
        "tier",
        "active_users",
        "users",
        "motion",
        "signals",
    ]
    assert [(r["domain"], r["score"]) for r in rows] == [
        ("acme.com", "91"),
        ("alpha.dev", "72"),
        ("beta.io", "72"),
    ]
    assert rows[0]["signals"].startswith("'=HYPERLINK(")
    assert "run run-7" in result.stderr  # where the list comes from, off stdout


def test_json_names_the_run_and_holds_the_rows(workdir: Workdir, seeded: SqlStateStore) -> None:
    result = workdir.invoke("lists", "stale", "--format", "json")

    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document == {
        "list": "stale",
        "run_id": "run-7",
        "saved_at": "2026-11-22T06:00:00Z",
        "rows": STALE,
    }


def test_destination_filters_a_per_destination_list(
    workdir: Workdir, seeded: SqlStateStore
) -> None:
    result = workdir.invoke("lists", "unmatched", "--destination", "hubspot", "--format", "csv")

    assert result.exit_code == 0, result.output
    rows = parsed_csv(result.stdout)
    assert [(r["destination"], r["domain"]) for r in rows] == [
        ("hubspot", "delta.co"),
        ("hubspot", "gamma.co"),
    ]


@pytest.mark.parametrize(
    ("name", "fmt"), [("abm.csv", "csv"), ("out/abm.json", "json"), ("ABM.CSV", "csv")]
)
def test_output_writes_the_file_its_name_says(
    workdir: Workdir, seeded: SqlStateStore, name: str, fmt: str
) -> None:
    result = workdir.invoke("lists", "abm", "--output", name)

    assert result.exit_code == 0, result.output
    written = (workdir.root / name).read_text(encoding="utf-8")
    domains: list[Any] = (
        [r["domain"] for r in json.loads(written)["rows"]]
        if fmt == "json"
        else [r["domain"] for r in parsed_csv(written)]
    )
    assert domains == ["acme.com", "alpha.dev", "beta.io"]
    assert f"to {name}" in result.stdout


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--output", "abm.xlsx"], "name the file .csv or .json"),
        (["--output", "abm.csv", "--format", "json"], "does not match"),
        (["--destination", "hubspot"], "not per destination"),
        (["--destination", "pipedrive"], "unknown destination"),
        (["--format", "xml"], "xml"),
    ],
)
def test_usage_errors_exit_2_and_write_nothing(
    workdir: Workdir, seeded: SqlStateStore, args: list[str], needle: str
) -> None:
    result = workdir.invoke("lists", "abm", *args)

    assert result.exit_code == 2, result.output
    assert needle in result.output
    assert not list(workdir.root.glob("abm.*"))


def test_an_output_folder_is_a_usage_error_and_an_unwritable_path_a_failure(
    workdir: Workdir, seeded: SqlStateStore
) -> None:
    folder = workdir.root / "lists.csv"
    folder.mkdir()
    blocker = workdir.root / "not-a-folder"
    blocker.write_text("a file\n")

    into_folder = workdir.invoke("lists", "abm", "--output", str(folder))
    unwritable = workdir.invoke("lists", "abm", "--output", str(blocker / "abm.csv"))

    assert into_folder.exit_code == 2 and "is a directory" in into_folder.output
    assert unwritable.exit_code == 1, unwritable.output
    assert f"cannot write {blocker / 'abm.csv'}" in unwritable.output
    assert "Traceback" not in unwritable.output


def test_no_run_yet_says_what_to_do(workdir: Workdir, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PLS_SYNC_STATE_URL", workdir.state_url)

    no_store = workdir.invoke("lists", "abm")
    SqlStateStore.open(workdir.state_url)  # a store, but no run kept lists yet
    no_lists = workdir.invoke("lists", "abm")

    for result in (no_store, no_lists):
        assert result.exit_code == 1, result.output
        assert "no run recorded yet: run `pls-sync run` first" in result.output
    assert not (workdir.root / ".pls-sync" / "state.sqlite").exists()


def test_a_list_the_last_run_did_not_keep(workdir: Workdir, seeded: SqlStateStore) -> None:
    seeded.save_lists("run-8", SAVED_AT, {"abm": ABM})

    result = workdir.invoke("lists", "stale")

    assert result.exit_code == 1
    assert "the last run (run-8 at 2026-11-22T06:00:00Z) kept no stale list" in result.output


def test_the_lists_of_a_real_run(workdir: Workdir, crm: object) -> None:
    ran, summary = workdir.sync("run", summary="s.json")
    assert ran.exit_code == 0, ran.output

    result = workdir.invoke("lists", "unmatched", "--format", "json")

    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["run_id"] == summary["run_id"]
    rows = document["rows"]
    for name, dest in summary["destinations"].items():
        listed = [r for r in rows if r["destination"] == name]
        assert len(listed) == dest["match"]["unmatched"]
        top = [(u["domain"], u["score"]) for u in dest["top_unmatched"]]
        assert [(r["domain"], r["score"]) for r in listed][: len(top)] == top
    scores = [r["score"] for r in rows]
    assert scores == sorted(scores, reverse=True)


def test_lists_reads_a_store_it_cannot_open_as_a_failure(
    workdir: Workdir, monkeypatch: pytest.MonkeyPatch
) -> None:
    not_a_database = workdir.root / "state.sqlite"
    not_a_database.write_text("this is not SQLite\n" * 100)
    monkeypatch.setenv("PLS_SYNC_STATE_URL", f"sqlite:///{not_a_database}")

    result = workdir.invoke("lists", "abm")

    assert result.exit_code == 1
    assert "State store unavailable" in result.output and "not a database" in result.output


def test_output_to_stdout_with_a_dash(workdir: Workdir, seeded: SqlStateStore) -> None:
    result = workdir.invoke("lists", "abm", "--output", "-", "--format", "csv")

    assert result.exit_code == 0, result.output
    assert [r["domain"] for r in parsed_csv(result.stdout)][0] == "acme.com"
    assert not Path(workdir.root / "-").exists()
