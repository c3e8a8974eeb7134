"""The container, read: the Dockerfile installs the way the README and CI install, from pyproject.

No Docker engine runs here, so the Dockerfile is kept simple enough to check by reading: a
slim Python base, dependencies from ``pyproject.toml`` in a cached layer before the source, a
non-root user, JSON logs on stdout, ``pls-sync status`` as the healthcheck, ``pls-sync schedule``
as the default command and no secret baked in.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
SECRET_NAME = re.compile(r"(?i)(password|passwd|secret|token|api_?key|session|credential|private)")
CREDENTIALS_IN_URL = re.compile(r"://[^/\s:@]+:[^/\s@]+@")


@dataclass(frozen=True)
class Instruction:
    """One Dockerfile instruction with its continuation lines joined."""

    keyword: str
    args: str


def parse_dockerfile(text: str) -> list[Instruction]:
    """Instructions in order; comments dropped, ``\\`` continuations joined."""
    instructions: list[Instruction] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        keyword, _, args = full.partition(" ")
        instructions.append(Instruction(keyword.upper(), args.strip()))
    assert not pending, "the Dockerfile ends inside a continued line"
    return instructions


@pytest.fixture(scope="module")
def dockerfile() -> list[Instruction]:
    return parse_dockerfile((REPO / "Dockerfile").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def pyproject() -> dict[str, Any]:
    with (REPO / "pyproject.toml").open("rb") as handle:
        return tomllib.load(handle)


def of(instructions: list[Instruction], keyword: str) -> list[tuple[int, Instruction]]:
    return [(i, ins) for i, ins in enumerate(instructions) if ins.keyword == keyword]


def env_pairs(args: str) -> dict[str, str]:
    """``ENV A=1 B="x y"`` (or the legacy ``ENV A 1``) as a dict."""
    tokens = shlex.split(args)
    if tokens and "=" not in tokens[0]:
        return {tokens[0]: " ".join(tokens[1:])}
    return dict(token.split("=", 1) for token in tokens)


def build_args(instructions: list[Instruction]) -> dict[str, str]:
    """``ARG NAME=default`` values, as a build without ``--build-arg`` sees them."""
    out: dict[str, str] = {}
    for _, ins in of(instructions, "ARG"):
        name, _, default = ins.args.partition("=")
        out[name.strip()] = default.strip().strip('"')
    return out


def shell_commands(instructions: list[Instruction]) -> list[tuple[int, str]]:
    """Every ``&&``/``;``-separated command of every RUN, with its instruction's index.

    ``${ARG}`` references are replaced by the ARG defaults.
    """
    args = build_args(instructions)

    def expand(text: str) -> str:
        return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args.get(m[1] or m[2], m[0]), text)

    out: list[tuple[int, str]] = []
    for index, ins in of(instructions, "RUN"):
        for command in re.split(r"&&|;", expand(ins.args)):
            if command.strip():
                out.append((index, command.strip()))
    return out


@dataclass(frozen=True)
class PipInstall:
    """What one ``pip install`` installs: requirement specs, editable or not, from where."""

    specs: tuple[str, ...]
    editable: bool
    no_deps: bool


def pip_installs(text: str) -> list[PipInstall]:
    """Every ``pip install`` in shell text (``pip``, ``pip3`` or ``python -m pip``)."""
    found: list[PipInstall] = []
    for line in re.split(r"&&|;|\n", text):
        match = re.search(r"\bpip3?\s+install\b(.*)", line)
        if not match:
            continue
        tokens = shlex.split(match.group(1))
        specs: list[str] = []
        editable = no_deps = False
        skip_next = False
        for token in tokens:
            if skip_next:
                skip_next = False
                continue
            if token in ("-e", "--editable"):
                editable = True
            elif token == "--no-deps":
                no_deps = True
            elif token in ("-r", "--requirement", "-c", "--constraint"):
                specs.append(f"{token} {tokens[tokens.index(token) + 1]}")
                skip_next = True
            elif not token.startswith("-"):
                specs.append(token)
        found.append(PipInstall(tuple(specs), editable, no_deps))
    return found


def project_extras(spec: str) -> set[str] | None:
    """The extras of ``.`` / ``.[a,b]``; ``None`` when the spec is not this project."""
    match = re.fullmatch(r"\.(?:\[([\w,\s-]*)\])?", spec)
    if match is None:
        return None
    return {e.strip() for e in (match.group(1) or "").split(",") if e.strip()}


def readme_first_command() -> str:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    block = re.search(r"```(?:bash|sh|shell)?\n(.*?)```", text, flags=re.S)
    assert block is not None, "the README has no command block"
    return block.group(1).strip().splitlines()[0]


# --------------------------------------------------------------------------- the image


def test_base_is_slim_python_311_matching_pyproject(
    dockerfile: list[Instruction], pyproject: dict[str, Any]
) -> None:
    froms = of(dockerfile, "FROM")
    assert len(froms) == 1, "one stage: simple enough to verify by reading"
    image = froms[0][1].args
    match = re.fullmatch(r"python:(3)\.(11)(?:\.\d+)?-slim(?:-[a-z]+)?", image)
    assert match, image
    minimum = re.fullmatch(r">=\s*(\d+)\.(\d+)", pyproject["project"]["requires-python"])
    assert minimum is not None
    assert (int(match[1]), int(match[2])) >= (int(minimum[1]), int(minimum[2]))


def test_dependencies_come_from_pyproject_in_a_layer_before_the_source(
    dockerfile: list[Instruction], pyproject: dict[str, Any]
) -> None:
    copies = of(dockerfile, "COPY")
    source_copy = min(i for i, ins in copies if re.search(r"\b(pls_sync|connectors)\b", ins.args))
    first_copy_index, first_copy = copies[0]
    # The dependency layer sees only the files that decide the dependencies.
    assert set(first_copy.args.split()[:-1]) == {"pyproject.toml", pyproject["project"]["readme"]}
    installs_before = [
        (i, install)
        for i, command in shell_commands(dockerfile)
        for install in pip_installs(command)
        if first_copy_index < i < source_copy
    ]
    assert installs_before, "no dependency install before the source is copied"
    dep_install = installs_before[0][1]
    assert not dep_install.no_deps
    extras = [project_extras(spec) for spec in dep_install.specs]
    assert extras and all(e is not None for e in extras), dep_install.specs
    # The source layer adds the project itself, nothing more.
    final = [
        install
        for i, command in shell_commands(dockerfile)
        for install in pip_installs(command)
        if i > source_copy
    ]
    assert final and all(install.no_deps for install in final)
    assert {s for f in final for s in f.specs} == set(dep_install.specs)
    # Whatever the image installs are declared extras of the project.
    declared = set(pyproject["project"]["optional-dependencies"])
    used = set().union(*(e for e in extras if e is not None))
    assert used <= declared and "postgres" in used


def test_the_image_runs_as_a_non_root_user(dockerfile: list[Instruction]) -> None:
    users = of(dockerfile, "USER")
    assert users, "no USER: the image would run as root"
    last_user_index, last_user = users[-1]
    assert last_user.args.split(":")[0] not in ("root", "0")
    # Nothing after USER needs root, and the state folder is the user's.
    assert not [i for i, _ in of(dockerfile, "RUN") if i > last_user_index]
    chowns = [c for _, c in shell_commands(dockerfile) if c.startswith("chown")]
    assert any("/app/.pls-sync" in c and last_user.args.split(":")[0] in c for c in chowns)


def test_state_config_and_mappings_can_be_mounted(dockerfile: list[Instruction]) -> None:
    workdir = of(dockerfile, "WORKDIR")[-1][1].args
    assert workdir == "/app"
    copied = {ins.args.split()[-1].rstrip("/") for _, ins in of(dockerfile, "COPY")}
    # The default --config is config/pls_sync.yaml, relative to the working directory.
    assert {"./config", "./mappings"} <= copied
    volumes = [v for _, ins in of(dockerfile, "VOLUME") for v in json.loads(ins.args)]
    assert "/app/.pls-sync" in volumes  # the default SQLite state store lives there


def test_healthcheck_is_pls_sync_status(dockerfile: list[Instruction]) -> None:
    checks = of(dockerfile, "HEALTHCHECK")
    assert len(checks) == 1
    options, _, command = checks[0][1].args.partition("CMD")
    assert json.loads(command) == ["pls-sync", "status"]
    interval = re.search(r"--interval=(\d+)([smh])", options)
    assert interval is not None
    seconds = int(interval[1]) * {"s": 1, "m": 60, "h": 3600}[interval[2]]
    assert 60 <= seconds <= 3600


def test_default_command_is_pls_sync_schedule(
    dockerfile: list[Instruction], pyproject: dict[str, Any]
) -> None:
    entrypoint = json.loads(of(dockerfile, "ENTRYPOINT")[-1][1].args)
    cmd = json.loads(of(dockerfile, "CMD")[-1][1].args)
    assert entrypoint + cmd == ["pls-sync", "schedule"]
    assert "pls-sync" in pyproject["project"]["scripts"]


def test_logs_go_to_stdout_and_no_secret_is_baked_in(dockerfile: list[Instruction]) -> None:
    env: dict[str, str] = {}
    for _, ins in of(dockerfile, "ENV"):
        env.update(env_pairs(ins.args))
    assert env.get("PLS_SYNC_LOG_STREAM") == "stdout"
    assert env.get("PYTHONUNBUFFERED") == "1"
    for keyword in ("ENV", "ARG", "LABEL"):
        for _, ins in of(dockerfile, keyword):
            assert not SECRET_NAME.search(ins.args), f"{keyword} {ins.args}"
            assert not CREDENTIALS_IN_URL.search(ins.args), f"{keyword} {ins.args}"
    for _, ins in of(dockerfile, "COPY") + of(dockerfile, "ADD"):
        sources = ins.args.split()[:-1]
        assert "." not in sources, "COPY . would bake whatever lies in the folder into the image"
        assert not any(re.search(r"(^|/)\.env|secret", s) for s in sources)


# --------------------------------------------------------------------------- .dockerignore


def ignored(path: str, patterns: list[str]) -> bool:
    """Whether ``path`` (or a folder above it) matches a .dockerignore pattern (last one wins)."""
    parts = path.strip("/").split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    verdict = False
    for raw in patterns:
        negate = raw.startswith("!")
        pattern = raw[1:] if negate else raw
        pattern = pattern.strip("/")
        bare = pattern.removeprefix("**/")
        for candidate in candidates:
            names = [candidate] + (
                ["/".join(candidate.split("/")[k:]) for k in range(len(candidate.split("/")))]
                if pattern.startswith("**/")
                else []
            )
            if any(fnmatch.fnmatch(name, bare) for name in names):
                verdict = not negate
    return verdict


@pytest.fixture(scope="module")
def dockerignore() -> list[str]:
    lines = (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


@pytest.mark.parametrize(
    "path",
    [".git", ".git/HEAD", ".pls-sync/state.sqlite", "tests/test_packaging.py", ".venv", "venv"],
)
def test_dockerignore_keeps_out_history_state_and_tests(path: str, dockerignore: list[str]) -> None:
    assert ignored(path, dockerignore)


def test_dockerignore_keeps_everything_the_dockerfile_copies(
    dockerfile: list[Instruction], dockerignore: list[str]
) -> None:
    for _, ins in of(dockerfile, "COPY"):
        for source in ins.args.split()[:-1]:
            assert (REPO / source).exists(), source
            assert not ignored(source, dockerignore), f"{source} is in .dockerignore"
    assert not ignored("pls_sync/data/free_mail.txt", dockerignore)  # package data ships


# --------------------------------------------------------------------------- one way to install


def test_readme_ci_and_image_all_install_from_pyproject(
    dockerfile: list[Instruction], pyproject: dict[str, Any]
) -> None:
    declared = set(pyproject["project"]["optional-dependencies"])
    readme = pip_installs(readme_first_command())
    ci = [
        install
        for install in pip_installs((REPO / ".ci" / "run").read_text(encoding="utf-8"))
        if install.specs != ("pip",)  # upgrading pip itself
    ]
    image = [install for _, c in shell_commands(dockerfile) for install in pip_installs(c)]

    for origin, installs in (("README", readme), (".ci/run", ci), ("Dockerfile", image)):
        assert installs, f"{origin} installs nothing"
        for install in installs:
            assert install.specs, f"{origin}: pip install of nothing"
            for spec in install.specs:
                extras = project_extras(spec)
                assert extras is not None, f"{origin} installs {spec!r}, not the project"
                assert extras <= declared, f"{origin} asks for undeclared extras {extras}"
    # Developers and CI work on the checkout (editable); the image installs a copy.
    assert all(install.editable for install in readme + ci)
    assert not any(install.editable for install in image)
    assert any(project_extras(s) == {"dev"} for i in ci for s in i.specs)


def test_no_requirements_file_competes_with_pyproject() -> None:
    skip = {".git", ".venv", "venv", "node_modules", ".pls-sync"}
    found = [
        path
        for path in REPO.rglob("*requirements*.txt")
        if not skip.intersection(path.relative_to(REPO).parts)
    ]
    assert found == []


def test_the_cli_entry_point_and_package_data_are_declared(pyproject: dict[str, Any]) -> None:
    assert pyproject["project"]["scripts"]["pls-sync"] == "pls_sync.cli:main"
    packages = pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    assert {"pls_sync*", "connectors*"} <= set(packages)
    data = pyproject["tool"]["setuptools"]["package-data"]["pls_sync"]
    assert all(list((REPO / "pls_sync").glob(pattern)) for pattern in data)


def test_the_cli_starts_without_the_config_logging_or_vendor_stacks() -> None:
    """A cron job pays start-up on every run and `--help` should answer at once: importing the
    CLI loads neither pydantic (the config), structlog, SQLAlchemy, the CRM clients, nor the
    report and calibration libraries; each loads in the command that uses it."""
    heavy = [
        "pydantic",
        "structlog",
        "sqlalchemy",
        "simple_salesforce",
        "hubspot",
        "duckdb",
        "matplotlib",
        "sklearn",
        "requests",
    ]
    code = f"import sys, pls_sync.cli; print(sorted(set({heavy!r}) & set(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO
    )
    assert result.stdout.strip() == "[]"
