"""Saved plans: the diff of a run as JSON, for ``pls-sync plan`` and for inspection after a run."""

from __future__ import annotations

import json
import shutil
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from pls_sync.planning import Plan


def save_plan(plans_dir: Path, run_id: str, plans: list[Plan], as_of: datetime) -> Path:
    """Write the plans as JSON (``plan-<run_id>.json`` and ``latest.json``); return the file."""
    plans_dir.mkdir(parents=True, exist_ok=True)
    path = plans_dir / f"plan-{run_id}.json"
    with path.open("w", encoding="utf-8") as out:
        write_plans_json(out, run_id, plans, as_of)
    shutil.copyfile(path, plans_dir / "latest.json")
    return path


def write_plans_json(out: TextIO, run_id: str, plans: list[Plan], as_of: datetime) -> None:
    """Stream the plans as indented JSON with one change per line.

    A full run at 100k accounts plans 150k changes: ``json.dumps(indent=2)`` of that took
    seconds in the pure-Python encoder and held the whole text (and its pieces) in memory.
    """

    def dump(value: Any) -> str:
        return json.dumps(value, default=str)

    out.write(f'{{\n  "run_id": {dump(run_id)},\n  "as_of": {dump(as_of.isoformat())},\n')
    out.write('  "destinations": [')
    for number, plan in enumerate(plans):
        head = plan.to_dict(limit=0)
        del head["changes"]
        out.write(("," if number else "") + "\n    {")
        for key, value in head.items():
            out.write(f"\n      {dump(key)}: {dump(value)},")
        out.write('\n      "changes": [')
        for index, change in enumerate(plan.change_dicts()):
            out.write(("," if index else "") + "\n        " + dump(change))
        out.write("\n      ]\n    }" if plan.changes else "]\n    }")
    out.write("\n  ]\n}\n" if plans else "]\n}\n")
