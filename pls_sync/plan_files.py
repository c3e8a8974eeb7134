"""Saved plans: the diff of a run as JSON, for ``pls-sync plan`` and for inspection after a run.

Every run that plans writes ``plan-<run_id>.json`` in ``plans_dir``. ``latest.json`` is the
plan of the last run that planned changes: it is replaced only by a plan holding at least one
change, so an unchanged rerun leaves the last useful plan in place.

Both files are written atomically: to a temporary file in the same folder, then moved over the
target with ``os.replace``. A crash or a failure mid-write never leaves a half-written file,
and a failed plan never replaces a good one.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from pls_sync.errors import FatalError
from pls_sync.files import replacing
from pls_sync.planning import Plan, json_value

LATEST = "latest.json"


def plan_file_name(run_id: str) -> str:
    """The file name of one run's plan."""
    return f"plan-{run_id}.json"


def save_plan(
    plans_dir: Path,
    run_id: str,
    plans: list[Plan],
    as_of: datetime,
    summary: Mapping[str, Any] | None = None,
) -> Path:
    """Write the run's plans to ``plan-<run_id>.json`` and, when they hold a change, to
    ``latest.json``; return the run's file.

    Raises ``FatalError`` (one line naming the folder and the reason) when the folder cannot
    be created or written.
    """
    _make_dir(plans_dir)
    path = plans_dir / plan_file_name(run_id)
    with _replacing(path) as out:
        write_plans_json(out, run_id, plans, as_of, summary)
    if any(plan.changes for plan in plans):
        with _replacing(plans_dir / LATEST) as out, path.open(encoding="utf-8") as saved:
            shutil.copyfileobj(saved, out)
    return path


def check_plans_dir(plans_dir: Path) -> str | None:
    """None when plans can be written to ``plans_dir`` (created if missing), else the one-line
    message ``save_plan`` would fail with, for checking before a run starts."""
    try:
        _make_dir(plans_dir)
        with tempfile.TemporaryFile(dir=plans_dir):
            pass
    except FatalError as exc:
        return str(exc)
    except OSError as exc:
        return _unwritable(plans_dir, exc)
    return None


def _unwritable(plans_dir: Path, reason: OSError | str) -> str:
    """The one line a user reads when plans cannot be written to ``plans_dir``."""
    if isinstance(reason, OSError):
        reason = reason.strerror or type(reason).__name__
    return (
        f"cannot write plans to {plans_dir}: {reason}; "
        "set plans_dir in config/pls_sync.yaml to a writable folder"
    )


def load_plan(path: Path) -> dict[str, Any]:
    """A saved plan file read back as a dict; ``FatalError`` when it is missing or not JSON."""
    try:
        with path.open(encoding="utf-8") as handle:
            loaded = json.load(handle)
    except OSError as exc:
        raise FatalError(f"cannot read plan {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise FatalError(f"cannot read plan {path}: not a plan file ({exc})") from None
    if not isinstance(loaded, dict) or "destinations" not in loaded:
        raise FatalError(f"cannot read plan {path}: not a plan file (no destinations)")
    return loaded


def write_plans_json(
    out: TextIO,
    run_id: str,
    plans: list[Plan],
    as_of: datetime,
    summary: Mapping[str, Any] | None = None,
) -> None:
    """Stream the plans as indented JSON with one change per line.

    A full run at 100k accounts plans 150k changes: ``json.dumps(indent=2)`` of that took
    seconds in the pure-Python encoder and held the whole text (and its pieces) in memory.
    ``as_of`` is written as the run summary writes it.
    """
    out.write(f'{{\n  "run_id": {_dump(run_id)},\n  "as_of": {_dump(as_of.isoformat())},\n')
    if summary is not None:
        text = json.dumps(summary, indent=2, default=_default).replace("\n", "\n  ")
        out.write(f'  "summary": {text},\n')
    out.write('  "destinations": [')
    for number, plan in enumerate(plans):
        out.write(("," if number else "") + "\n    {")
        for key, value in plan.header().items():
            out.write(f"\n      {_dump(key)}: {_dump(value)},")
        out.write('\n      "changes": [')
        for index, change in enumerate(plan.change_dicts()):
            out.write(("," if index else "") + "\n        " + _dump(change))
        out.write("\n      ]" if plan.changes else "]")
        # Fields a write policy left alone: readers of the plan see which and why.
        out.write(',\n      "left_alone": [')
        for index, item in enumerate(plan.left_alone_dicts()):
            out.write(("," if index else "") + "\n        " + _dump(item))
        out.write("\n      ]\n    }" if plan.left_alone else "]\n    }")
    out.write("\n  ]\n}\n" if plans else "]\n}\n")


def _default(value: Any) -> Any:
    converted = json_value(value)
    return str(value) if converted is value else converted


def _dump(value: Any) -> str:
    return json.dumps(value, default=_default)


def _make_dir(plans_dir: Path) -> None:
    if plans_dir.exists() and not plans_dir.is_dir():
        raise FatalError(_unwritable(plans_dir, "it is a file, not a folder"))
    try:
        plans_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise FatalError(_unwritable(plans_dir, exc)) from None


@contextlib.contextmanager
def _replacing(target: Path) -> Iterator[TextIO]:
    """``pls_sync.files.replacing`` with its OS errors as one ``FatalError`` line."""
    try:
        with replacing(target) as out:
            yield out
    except OSError as exc:
        raise FatalError(_unwritable(target.parent, exc)) from None
