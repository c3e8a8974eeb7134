"""No way out through a traceback: every command's error paths end in a line and exit 1 or 2.

Each case runs one command in-process (Typer's ``CliRunner``) in a fresh working folder holding
the session's small demo warehouse, breaks one thing (the config, an option, the warehouse, the
state store, the CRM, an output path) and checks what a user sees: exit code 1 or 2, a message,
no traceback, and that the command ended by ``SystemExit`` rather than an exception. Every
registered command must have cases here: a new command without any fails the coverage test.
Two real ``pls-sync`` processes prove the console script prints no traceback either.
"""

from __future__ import annotations

import http.server
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from typer.testing import Result

from pls_sync import cli
from pls_sync.demo import SANDBOX_ENV, sandbox_settings, write_sandbox_env
from pls_sync.sandbox.server import Sandbox
from tests.e2e.conftest import CONFIG, REPO_ROOT, Workdir, copy_config


@dataclass
class Broken:
    """What a case's setup works with: the folder, the environment, things to close after, and
    values its arguments take (``{port}``, ``{root}``)."""

    workdir: Workdir
    monkeypatch: pytest.MonkeyPatch
    stack: ExitStack
    values: dict[str, str] = field(default_factory=dict)

    @property
    def root(self) -> Path:
        """The working folder."""
        return self.workdir.root

    def setenv(self, name: str, value: str) -> None:
        """Set an environment variable for the case."""
        self.monkeypatch.setenv(name, value)


Setup = Callable[[Broken], None]


def closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def not_a_crm() -> Iterator[str]:
    """A loopback web server that answers every request with an HTML 404: no CRM there."""

    class NotFound(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_error(404)

        do_POST = do_PATCH = do_GET

        def log_message(self, format: str, *args: object) -> None:
            """Quiet."""

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NotFound)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


# --- what breaks -------------------------------------------------------------------------------


def nothing(_b: Broken) -> None:
    """Break nothing: the arguments alone are wrong."""


def warehouse_file_missing(b: Broken) -> None:
    """The warehouse URL names a DuckDB file that is not there."""
    b.setenv("PLS_SYNC_WAREHOUSE_URL", f"duckdb:///{b.root}/gone/w.duckdb")


def warehouse_port_closed(b: Broken) -> None:
    """The warehouse URL names a server nobody runs."""
    b.setenv("PLS_SYNC_WAREHOUSE_URL", f"postgresql+psycopg://pls@127.0.0.1:{closed_port()}/w")


def state_port_closed(b: Broken) -> None:
    """The state store URL names a server nobody runs (with a password to keep secret)."""
    url = f"postgresql+psycopg://pls:s3cret-pw@127.0.0.1:{closed_port()}/state"
    b.setenv("PLS_SYNC_STATE_URL", url)


def state_not_a_database(b: Broken) -> None:
    """The state store file holds text, not SQLite."""
    path = b.root / ".pls-sync" / "state.sqlite"
    path.write_text("not a database\n" * 200)
    b.setenv("PLS_SYNC_STATE_URL", f"sqlite:///{path}")


def salesforce_missing(b: Broken) -> None:
    """Only Salesforce is enabled, and no credential is set (tests/conftest.py clears them)."""
    b.setenv("PLS_SYNC_HUBSPOT_ENABLED", "false")


def bad_jwt_key(b: Broken) -> None:
    """JWT login with a key file that is not a PEM key."""
    key = b.root / "server.key"
    key.write_text("this is not a private key\n")
    b.setenv("PLS_SYNC_HUBSPOT_ENABLED", "false")
    b.setenv("SALESFORCE_USERNAME", "revops@example.com")
    b.setenv("SALESFORCE_CONSUMER_KEY", "3MVG9example")
    b.setenv("SALESFORCE_PRIVATE_KEY_FILE", str(key))


def sandbox_file_at_closed_port(b: Broken) -> None:
    """``.pls-sync/sandbox.env`` names a sandbox that is not running."""
    url = f"http://127.0.0.1:{closed_port()}"
    write_sandbox_env(b.root / SANDBOX_ENV, sandbox_settings(url, "s", "t"))


def blocker_file(b: Broken) -> None:
    """A file named ``blocker`` where an output path needs a folder."""
    (b.root / "blocker").write_text("a file, not a folder\n")


def output_folder(b: Broken) -> None:
    """A folder named ``out.csv`` where a file should go."""
    (b.root / "out.csv").mkdir()


def plans_dir_blocked(b: Broken) -> None:
    """``plans_dir`` (in a copy of the config) is a path under a file."""
    blocker_file(b)
    config = copy_config(b.root)
    text = config.read_text().replace("plans_dir: .pls-sync/plans", "plans_dir: blocker/plans")
    config.write_text(text)


def config_broken(b: Broken) -> None:
    """A config file that is not valid YAML."""
    (b.root / "broken.yaml").write_text("warehouse: [unclosed\n  : :\n")


def lists_saved(b: Broken) -> None:
    """A state store holding the last run's lists, so ``lists`` gets as far as writing."""
    from connectors.state import SqlStateStore

    store = SqlStateStore.open(f"sqlite:///{b.root / '.pls-sync' / 'state.sqlite'}")
    store.save_lists("r1", b.workdir.as_of, {"abm": [{"domain": "acme.com", "score": 90}]})
    store.close()
    blocker_file(b)


def port_taken(b: Broken) -> None:
    """A sandbox already listens on ``{port}``."""
    box = b.stack.enter_context(Sandbox(seed=None))
    b.values["port"] = str(box.port)


# --- the cases -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One command run with one thing broken."""

    command: str
    args: tuple[str, ...]
    setup: Setup = nothing
    exit_codes: tuple[int, ...] = (1, 2)
    says: str = ""  # a piece of the message the user must see
    config: str | None = str(CONFIG)  # --config to pass (None: the command takes none)
    secrets: tuple[str, ...] = field(default=())  # text that must never be shown


AS_OF = ("--as-of", "2026-12-04")
MISSING = str(Path("/nonexistent/pls_sync.yaml"))

CONFIG_COMMANDS = {
    "run": ("run",),
    "plan": ("plan",),
    "validate": ("validate",),
    "export": ("export", "out.csv"),
    "explain": ("explain", "acme.com"),
    "status": ("status",),
    "lists": ("lists", "abm"),
    "demo": ("demo", "--companies", "5"),
    "schedule": ("schedule",),
    "setup": ("setup",),
    "report": ("report",),
    "calibrate": ("calibrate",),
}
SANDBOX_OPTION = (
    "run", "plan", "validate", "export", "explain", "status", "lists", "schedule", "setup",
    "report",
)  # fmt: skip
WAREHOUSE_READERS = {
    "calibrate": ("calibrate", *AS_OF),
    "run": ("run", *AS_OF),
    "plan": ("plan", *AS_OF),
    "export": ("export", "out.csv", *AS_OF),
    "explain": ("explain", "acme.com", *AS_OF),
}
STATE_READERS = {
    **{name: args for name, args in WAREHOUSE_READERS.items() if name != "calibrate"},
    "status": ("status",),
    "lists": ("lists", "abm"),
    "report": ("report",),
}
CRM_USERS = {
    "run": ("run", *AS_OF),
    "plan": ("plan", *AS_OF),
    "export": ("export", "out.csv", "--with-crm", *AS_OF),
    "setup": ("setup", "--apply"),
}

CASES: dict[str, Case] = {}
for name, args in CONFIG_COMMANDS.items():
    CASES[f"{name}-config-missing"] = Case(name, args, config=MISSING, says="file not found")
    CASES[f"{name}-config-folder"] = Case(name, args, config=str(REPO_ROOT), says="directory")
    CASES[f"{name}-config-not-yaml"] = Case(
        name, args, config_broken, config="broken.yaml", says="broken.yaml"
    )
for name in SANDBOX_OPTION:
    args = (*CONFIG_COMMANDS[name], "--sandbox")
    CASES[f"{name}-sandbox-none"] = Case(name, args, says="start it with `pls-sync sandbox`")
    CASES[f"{name}-sandbox-down"] = Case(
        name, args, sandbox_file_at_closed_port, says="no CRM sandbox answers"
    )
for name in ("run", "plan", "validate", "export", "explain"):
    args = (*CONFIG_COMMANDS[name], "--as-of", "nonsense")
    CASES[f"{name}-as-of-nonsense"] = Case(name, args, exit_codes=(2,), says="nonsense")
for name in ("plan", "status"):
    CASES[f"{name}-limit-negative"] = Case(name, (name, "--limit", "-1"), exit_codes=(2,))
for name in ("plan", "explain", "status", "lists"):
    args = (*CONFIG_COMMANDS[name], "--format", "xml")
    CASES[f"{name}-format-xml"] = Case(name, args, exit_codes=(2,), says="xml")
for name in ("run", "plan", "lists", "setup"):
    args = (*CONFIG_COMMANDS[name], "--destination", "pipedrive")
    CASES[f"{name}-unknown-destination"] = Case(name, args, exit_codes=(2,), says="pipedrive")
for name, args in WAREHOUSE_READERS.items():
    CASES[f"{name}-warehouse-missing"] = Case(
        name, args, warehouse_file_missing, exit_codes=(1,), says="warehouse"
    )
    CASES[f"{name}-warehouse-closed"] = Case(
        name, args, warehouse_port_closed, exit_codes=(1,), says="warehouse"
    )
for name, args in STATE_READERS.items():
    CASES[f"{name}-state-closed"] = Case(
        name, args, state_port_closed, exit_codes=(1,), says="state store", secrets=("s3cret-pw",)
    )
    CASES[f"{name}-state-not-a-database"] = Case(
        name, args, state_not_a_database, exit_codes=(1,), says="not a database"
    )
CASES["schedule-state-not-a-database"] = Case(
    "schedule", ("schedule",), state_not_a_database, exit_codes=(1,), says="not a database"
)
for name, args in CRM_USERS.items():
    CASES[f"{name}-crm-credentials-missing"] = Case(
        name, args, salesforce_missing, exit_codes=(1,), says="credentials are missing"
    )
    CASES[f"{name}-crm-jwt-key-unreadable"] = Case(
        name, args, bad_jwt_key, exit_codes=(1,), says="salesforce"
    )
CASES["validate-warehouse-missing"] = Case(
    "validate", ("validate",), warehouse_file_missing, says="warehouse"
)
CASES["calibrate-capacity-and-precision"] = Case(
    "calibrate",
    ("calibrate", "--propose", "p.yaml", "--capacity", "5", "--target-precision", "0.5"),
    exit_codes=(2,),
    says="exclude each other",
)
CASES["calibrate-propose-over-the-scoring-file"] = Case(
    "calibrate",
    ("calibrate", "--propose", str(REPO_ROOT / "config" / "scoring.yaml")),
    exit_codes=(2,),
    says="the scoring file the config uses",
)
CASES["calibrate-capacity-without-propose"] = Case(
    "calibrate", ("calibrate", "--capacity", "5"), exit_codes=(2,), says="add --propose"
)
CASES["export-to-a-folder"] = Case(
    "export", ("export", "out.csv", *AS_OF), output_folder, exit_codes=(2,), says="directory"
)
CASES["export-under-a-file"] = Case(
    "export",
    ("export", "blocker/out.csv", *AS_OF),
    blocker_file,
    exit_codes=(1,),
    says="is a file, not a folder",
)
CASES["export-to-xlsx"] = Case(
    "export", ("export", "out.xlsx", *AS_OF), exit_codes=(2,), says="name the file .csv"
)
CASES["plan-summary-json-under-a-file"] = Case(
    "plan",
    ("plan", *AS_OF, "--summary-json", "blocker/s.json"),
    blocker_file,
    exit_codes=(1,),
    says="is a file, not a folder",
)
CASES["run-plans-dir-unwritable"] = Case(
    "run",
    ("run", *AS_OF),
    plans_dir_blocked,
    exit_codes=(1,),
    says="blocker",
    config="{root}/config/pls_sync.yaml",
)
CASES["lists-output-under-a-file"] = Case(
    "lists",
    ("lists", "abm", "--output", "blocker/abm.csv"),
    lists_saved,
    exit_codes=(1,),
    says="is a file, not a folder",
)
CASES["explain-unknown-account"] = Case(
    "explain", ("explain", "no-such-company.example", *AS_OF), exit_codes=(1,), says="No product"
)
CASES["setup-destination-disabled"] = Case(
    "setup", ("setup", "-d", "hubspot"), exit_codes=(2,), says="no enabled destination"
)
CASES["report-not-html"] = Case(
    "report", ("report", "--output", "r.pdf"), exit_codes=(2,), says="name the file .html"
)
CASES["report-nothing-ran"] = Case("report", ("report",), exit_codes=(1,), says="no run recorded")
CASES["demo-negative-companies"] = Case("demo", ("demo", "--companies", "-1"), exit_codes=(2,))
for port in ("70000", "-1"):
    CASES[f"sandbox-port-{port}"] = Case(
        "sandbox", ("sandbox", "--port", port), exit_codes=(2,), says="--port", config=None
    )
CASES["sandbox-port-in-use"] = Case(
    "sandbox", ("sandbox", "--port", "{port}"), port_taken, (1,), "is in use", config=None
)


def command_names() -> set[str]:
    """Every command the CLI registers."""
    return {
        command.name or command.callback.__name__.replace("_", "-")  # type: ignore[union-attr]
        for command in cli.app.registered_commands
    }


def test_every_command_has_error_cases() -> None:
    covered = {case.command for case in CASES.values()}
    assert command_names() <= covered, f"no error case for {command_names() - covered}"


def assert_one_clean_failure(result: Result, exit_codes: tuple[int, ...], says: str) -> str:
    """The command ended by exiting 1 or 2 with a message and no traceback; its output."""
    shown = result.stdout + result.stderr
    assert isinstance(result.exception, SystemExit), (result.exception, shown)
    assert result.exit_code in exit_codes, shown
    assert "Traceback" not in shown
    assert says in shown, shown
    return shown


@pytest.mark.parametrize("case_id", list(CASES))
def test_an_error_is_a_line_and_an_exit_code_never_a_traceback(
    workdir: Workdir, monkeypatch: pytest.MonkeyPatch, case_id: str
) -> None:
    case = CASES[case_id]
    with ExitStack() as stack:
        broken = Broken(workdir, monkeypatch, stack, {"root": str(workdir.root)})
        case.setup(broken)
        args = [arg.format(**broken.values) for arg in case.args]
        if case.config is not None:
            args += ["--config", case.config.format(**broken.values)]

        result = workdir.runner.invoke(cli.app, args)

    shown = assert_one_clean_failure(result, case.exit_codes, case.says)
    for secret in case.secrets:
        assert secret not in shown


def test_a_crm_url_where_no_crm_answers_fails_the_destination_in_one_line(
    workdir: Workdir, monkeypatch: pytest.MonkeyPatch, not_a_crm: str
) -> None:
    monkeypatch.setenv("PLS_SYNC_HUBSPOT_ENABLED", "false")
    monkeypatch.setenv("SALESFORCE_INSTANCE_URL", not_a_crm)
    monkeypatch.setenv("SALESFORCE_SESSION_ID", "00Dxx0000000001!AQno-crm-here")

    run = workdir.runner.invoke(cli.app, ["run", *AS_OF, "--config", str(CONFIG)])
    export = workdir.runner.invoke(
        cli.app, ["export", "out.csv", "--with-crm", *AS_OF, "--config", str(CONFIG)]
    )

    assert "salesforce: failed" in assert_one_clean_failure(run, (1,), "Salesforce")
    assert_one_clean_failure(export, (1,), "Export failed")
    assert "AQno-crm-here" not in run.output + export.output


def pls_sync_process(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """The ``pls-sync`` console script of this environment, as a user runs it."""
    script = Path(sys.executable).with_name("pls-sync")
    command = [str(script)] if script.exists() else [sys.executable, "-c", MAIN]
    return subprocess.run(
        [*command, *args],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )


MAIN = "from pls_sync.cli import main; main()"


def test_the_real_process_prints_one_line_and_no_traceback(
    workdir: Workdir, monkeypatch: pytest.MonkeyPatch
) -> None:
    with ExitStack() as stack:
        state_not_a_database(Broken(workdir, monkeypatch, stack))
    (workdir.root / "out.csv").mkdir()

    status = pls_sync_process(["status", "--config", str(CONFIG)], workdir.root)
    export = pls_sync_process(["export", "out.csv", "--config", str(CONFIG)], workdir.root)

    assert (status.returncode, export.returncode) == (1, 2)
    for done in (status, export):
        assert "Traceback" not in done.stdout + done.stderr
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "not a database" in status.stderr
    assert "out.csv is a directory" in export.stderr
