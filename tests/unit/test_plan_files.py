"""Plan files: their shape, atomic writes, when latest.json moves, unwritable folders."""

from __future__ import annotations

import errno
import json
import os
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from pls_sync.errors import FatalError
from pls_sync.models import RecordChange
from pls_sync.plan_files import check_plans_dir, load_plan, save_plan
from pls_sync.planning import Plan

AS_OF = datetime(2026, 11, 22, 6, 0, tzinfo=UTC)
QUALIFIED = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)


def plan_with_changes(destination: str = "salesforce", count: int = 2) -> Plan:
    changes = [
        RecordChange(
            f"001{n:03d}",
            {"PQA_Score__c": 85 + n, "PQA_Qualified_Since__c": QUALIFIED, "PQA_Signals__c": None},
            f"co{n}.com",
            1000.0 + n,
            current={"PQA_Score__c": 40, "PQA_Qualified_Since__c": None, "PQA_Signals__c": "x"},
        )
        for n in range(count)
    ]
    fields = Counter({"PQA_Score__c": count, "PQA_Qualified_Since__c": count})
    fields["PQA_Signals__c"] = count
    return Plan(destination, "Account", changes, count + 3, 3, fields)


def unchanged_plan(destination: str = "salesforce") -> Plan:
    return Plan(destination, "Account", [], records_considered=5, records_unchanged=5)


class Unserialisable:
    """A value whose JSON form cannot be produced: serialising it fails mid-file."""

    def __str__(self) -> str:
        raise RuntimeError("cannot serialise")


def test_a_plan_file_lists_each_change_as_from_to_pairs(tmp_path: Path) -> None:
    summary = {"run_id": "r1", "status": "succeeded", "finished": QUALIFIED}
    path = save_plan(
        tmp_path, "r1", [plan_with_changes(), unchanged_plan("hubspot")], AS_OF, summary
    )
    assert path == tmp_path / "plan-r1.json"
    saved = load_plan(path)
    assert saved["run_id"] == "r1" and saved["as_of"] == AS_OF.isoformat()
    assert saved["summary"] == {
        "run_id": "r1",
        "status": "succeeded",
        "finished": "2026-11-22T10:00:00Z",
    }
    salesforce, hubspot = saved["destinations"]
    assert salesforce["left_alone"] == []
    assert {k: v for k, v in salesforce.items() if k not in ("changes", "left_alone")} == {
        "destination": "salesforce",
        "object": "Account",
        "records_considered": 5,
        "records_changed": 2,
        "records_unchanged": 3,
        "fields_changed": 6,
        "field_changes": {"PQA_Qualified_Since__c": 2, "PQA_Score__c": 2, "PQA_Signals__c": 2},
        "records_retired": {},
        "fields_left_alone": {},
    }
    assert salesforce["changes"][1] == {
        "record_id": "001001",
        "account": "co1.com",
        "priority": 1001,
        "fields": {
            "PQA_Score__c": {"from": 40, "to": 86},
            "PQA_Qualified_Since__c": {"from": None, "to": "2026-11-22T10:00:00Z"},
            "PQA_Signals__c": {"from": "x", "to": None},
        },
    }
    assert hubspot["changes"] == [] and hubspot["records_unchanged"] == 5
    # Streamed one change per line, so a big plan is never one giant string.
    lines = path.read_text(encoding="utf-8").splitlines()
    assert sum('"record_id"' in line for line in lines) == 2
    assert load_plan(tmp_path / "latest.json") == saved


def test_a_run_without_plans_writes_valid_json(tmp_path: Path) -> None:
    path = save_plan(tmp_path, "r0", [], AS_OF)
    assert load_plan(path) == {"run_id": "r0", "as_of": AS_OF.isoformat(), "destinations": []}
    assert not (tmp_path / "latest.json").exists()


def test_latest_is_only_replaced_by_a_plan_with_changes(tmp_path: Path) -> None:
    save_plan(tmp_path, "r1", [plan_with_changes()], AS_OF)
    save_plan(tmp_path, "r2", [unchanged_plan(), unchanged_plan("hubspot")], AS_OF)
    assert load_plan(tmp_path / "plan-r2.json")["destinations"][0]["records_changed"] == 0
    assert load_plan(tmp_path / "latest.json")["run_id"] == "r1"
    save_plan(tmp_path, "r3", [unchanged_plan(), plan_with_changes("hubspot", 1)], AS_OF)
    assert load_plan(tmp_path / "latest.json")["run_id"] == "r3"


def test_a_failure_mid_write_leaves_the_previous_files_intact(tmp_path: Path) -> None:
    save_plan(tmp_path, "r1", [plan_with_changes()], AS_OF)
    latest_before = (tmp_path / "latest.json").read_bytes()
    plan_before = (tmp_path / "plan-r1.json").read_bytes()
    broken = plan_with_changes(count=500)
    broken.changes[400] = RecordChange("001X", {"PQA_Score__c": Unserialisable()}, "x.com")
    with pytest.raises(RuntimeError, match="cannot serialise"):
        save_plan(tmp_path, "r2", [broken], AS_OF)
    with pytest.raises(RuntimeError, match="cannot serialise"):
        save_plan(tmp_path, "r1", [broken], AS_OF)  # the same run saved again: still the old one
    assert (tmp_path / "latest.json").read_bytes() == latest_before
    assert (tmp_path / "plan-r1.json").read_bytes() == plan_before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest.json", "plan-r1.json"]


def test_a_disk_error_mid_write_is_one_fatal_line_and_leaves_no_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    save_plan(tmp_path, "r1", [plan_with_changes()], AS_OF)
    latest_before = (tmp_path / "latest.json").read_bytes()

    def disk_full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(FatalError) as caught:
        save_plan(tmp_path, "r2", [plan_with_changes()], AS_OF)
    assert str(caught.value) == (
        f"cannot write plans to {tmp_path}: No space left on device; "
        "set plans_dir in config/pls_sync.yaml to a writable folder"
    )
    assert (tmp_path / "latest.json").read_bytes() == latest_before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest.json", "plan-r1.json"]


def test_a_folder_under_a_regular_file_cannot_hold_plans(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x", encoding="utf-8")
    plans_dir = blocker / "plans"
    expected = (
        f"cannot write plans to {plans_dir}: Not a directory; "
        "set plans_dir in config/pls_sync.yaml to a writable folder"
    )
    assert check_plans_dir(plans_dir) == expected
    with pytest.raises(FatalError) as caught:
        save_plan(plans_dir, "r1", [plan_with_changes()], AS_OF)
    assert str(caught.value) == expected and caught.value.__cause__ is None


def test_plans_dir_that_is_a_file_is_named_as_such(tmp_path: Path) -> None:
    plans_dir = tmp_path / "plans"
    plans_dir.write_text("x", encoding="utf-8")
    message = check_plans_dir(plans_dir)
    assert message == (
        f"cannot write plans to {plans_dir}: it is a file, not a folder; "
        "set plans_dir in config/pls_sync.yaml to a writable folder"
    )
    with pytest.raises(FatalError, match="it is a file, not a folder"):
        save_plan(plans_dir, "r1", [], AS_OF)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to read-only folders")
def test_a_read_only_folder_cannot_hold_plans(tmp_path: Path) -> None:
    plans_dir = tmp_path / "plans"
    plans_dir.mkdir()
    plans_dir.chmod(0o500)
    try:
        message = check_plans_dir(plans_dir)
        assert message is not None and message.startswith(
            f"cannot write plans to {plans_dir}: Permission denied; "
        )
        with pytest.raises(FatalError, match="Permission denied"):
            save_plan(plans_dir, "r1", [plan_with_changes()], AS_OF)
    finally:
        plans_dir.chmod(0o700)


def test_a_writable_folder_is_created_and_checked_clean(tmp_path: Path) -> None:
    plans_dir = tmp_path / "a" / "b"
    assert check_plans_dir(plans_dir) is None
    assert plans_dir.is_dir() and list(plans_dir.iterdir()) == []


def test_load_plan_refuses_what_is_not_a_plan(tmp_path: Path) -> None:
    with pytest.raises(FatalError, match="cannot read plan .*missing.json: No such file"):
        load_plan(tmp_path / "missing.json")
    garbage = tmp_path / "garbage.json"
    garbage.write_text('{"run_id": ', encoding="utf-8")
    with pytest.raises(FatalError, match="not a plan file"):
        load_plan(garbage)
    other: Any = {"hello": 1}
    (tmp_path / "other.json").write_text(json.dumps(other), encoding="utf-8")
    with pytest.raises(FatalError, match="not a plan file"):
        load_plan(tmp_path / "other.json")
