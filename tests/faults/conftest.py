"""Print the fault tests' tally (faults by kind, runs killed, fields and rep alert tasks
compared, duplicates) after a run."""

from __future__ import annotations

import pytest

from tests.faults.harness import TALLY


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The counts the fault-tolerance issue asks to report, when any fault test ran."""
    if TALLY.runs:
        terminalreporter.section("fault tests")
        for line in TALLY.lines():
            terminalreporter.write_line(line)
