"""YAML that remembers where things are, and ``${VAR}`` interpolation.

Every mapping key and sequence item keeps its 1-based source line, so a configuration problem
found long after parsing can still name its file, line and dotted key. String scalars may hold
``${VAR}`` or ``${VAR:-default}`` (also embedded in longer text); ``$$`` is a literal ``$``.
Variables come from the environment, then from ``/run/secrets/<var in lower case>``. An
unquoted scalar is re-read as YAML after interpolation, so ``${N:-200}`` is an int and
``${X:-true}`` a bool; a quoted one stays a string.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.resolver import Resolver

from pls_sync.errors import ConfigIssue, format_key, nearest_line

__all__ = [
    "DEFAULT_SECRETS_DIR",
    "MAX_VALUES",
    "SECRETS_DIR_ENV",
    "ConfigLines",
    "Document",
    "Interpolator",
    "KeyPath",
    "format_key",
    "load_document",
]

KeyPath = tuple[str | int, ...]
"""Where a value sits in a document: mapping keys and sequence indexes from the root."""

SECRETS_DIR_ENV = "PLS_SYNC_SECRETS_DIR"
DEFAULT_SECRETS_DIR = "/run/secrets"

_STR_TAG = "tag:yaml.org,2002:str"
_MAP_TAG = "tag:yaml.org,2002:map"
_SEQ_TAG = "tag:yaml.org,2002:seq"
_EXPRESSION = re.compile(r"\$\$|\$\{([^}]*)\}|\$\{")
_REFERENCE = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(?::-(.*))?", re.DOTALL)
# Environment values under names like these are treated as secrets and redacted from messages.
_SECRET_NAME = re.compile(r"(?i)pass|secret|token|key|credential|auth|private")


class Interpolator:
    """Replaces ``${VAR}`` and ``${VAR:-default}`` from the environment or the secrets folder.

    ``secrets`` collects values that must never be shown: everything read from the secrets
    folder and environment values whose names look like credentials.
    """

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        self.env: Mapping[str, str] = os.environ if env is None else env
        self.secrets_dir = Path(
            self.env.get(SECRETS_DIR_ENV) or os.environ.get(SECRETS_DIR_ENV) or DEFAULT_SECRETS_DIR
        )
        self.secrets: list[str] = []

    def lookup(self, name: str) -> str | None:
        """The variable's value from the environment, else its secret file, else None."""
        value = self.env.get(name)
        if value is not None:
            if _SECRET_NAME.search(name):
                self.secrets.append(value)
            return value
        try:
            secret = (self.secrets_dir / name.lower()).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            return None
        secret = secret.rstrip("\r\n")
        self.secrets.append(secret)
        return secret

    def substitute(self, text: str) -> tuple[str, list[str]]:
        """``text`` with every expression replaced, and the problems found (empty when none).

        ``${VAR:-default}`` takes the default when VAR is unset or empty, as a shell does.
        Problems name the variable, never a value.
        """
        problems: list[str] = []

        def replace(match: re.Match[str]) -> str:
            token = match.group(0)
            if token == "$$":
                return "$"
            body = match.group(1)
            reference = _REFERENCE.fullmatch(body) if body is not None else None
            if reference is None:
                problems.append(
                    f"malformed interpolation {token!r}: use ${{VAR}}, ${{VAR:-default}} "
                    "or $$ for a literal $"
                )
                return token
            name, default = reference.group(1), reference.group(2)
            value = self.lookup(name)
            if default is not None and not value:
                return default
            if value is None:
                problems.append(
                    f"environment variable {name} is not set "
                    f"(nor is there a secret file {self.secrets_dir / name.lower()})"
                )
                return token
            return value

        return _EXPRESSION.sub(replace, text), problems


@dataclass(slots=True)
class Document:
    """A parsed YAML file: plain Python data plus the source line of every key and item.

    ``failed`` holds the paths whose interpolation failed; their values are left as written
    and already reported, so validation skips them.
    """

    path: Path
    data: Any
    lines: dict[KeyPath, int] = field(default_factory=dict)
    failed: set[KeyPath] = field(default_factory=set)

    @property
    def file(self) -> str:
        """The file name as issues report it."""
        return str(self.path)

    def line(self, path: KeyPath) -> int | None:
        """The line of ``path``, or of its nearest ancestor present in the file."""
        return nearest_line(self.lines, path)

    def has(self, path: KeyPath) -> bool:
        """Whether ``path`` names a key or item written in the file."""
        return path in self.lines

    def issue(self, path: KeyPath, message: str, line: int | None = None) -> ConfigIssue:
        """A ``ConfigIssue`` at ``path`` in this file."""
        return ConfigIssue(
            self.file, line if line is not None else self.line(path), format_key(path), message
        )

    def is_failed(self, path: KeyPath) -> bool:
        """Whether ``path`` lies at or under a value whose interpolation failed."""
        return any(path[: len(bad)] == bad for bad in self.failed)


@dataclass(slots=True)
class ConfigLines:
    """Where every key of every loaded file is, kept after loading.

    Problems found later (against the live warehouse or CRM schema) are reported like the static
    checks: ``file:line: key: message``.
    """

    files: dict[str, dict[KeyPath, int]] = field(default_factory=dict)

    def add(self, document: Document) -> None:
        """Remember the lines of ``document``."""
        self.files[document.file] = dict(document.lines)

    def line(self, file: str | Path, path: KeyPath) -> int | None:
        """The line of ``path`` in ``file``, or of its nearest ancestor written there."""
        return nearest_line(self.files.get(str(file), {}), path)

    def issue(self, file: str | Path, path: KeyPath, message: str) -> ConfigIssue:
        """A ``ConfigIssue`` at ``path`` of ``file``."""
        return ConfigIssue(str(file), self.line(file, path), format_key(path), message)


# YAML aliases let a few lines stand for billions of values ("billion laughs"): a config file
# is small, so a document that expands past this many values is refused, not built.
MAX_VALUES = 100_000


class _Builder:
    """Turns a composed node graph into Python data, recording lines and interpolating."""

    def __init__(self, document: Document, interpolator: Interpolator | None) -> None:
        self.document = document
        self.interpolator = interpolator
        self.constructor = SafeConstructor()
        self.resolver = Resolver()
        self.issues: list[ConfigIssue] = []
        self._active: set[int] = set()
        self.values = 0

    def build(self, node: Node, path: KeyPath) -> Any:
        self.values += 1
        if self.values > MAX_VALUES:
            raise _TooManyValues(path)
        self.document.lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, ScalarNode):
            return self._scalar(node, path)
        if id(node) in self._active:
            return self._refuse(path, "recursive YAML alias")
        if node.tag not in (_MAP_TAG, _SEQ_TAG):
            return self._refuse(path, f"unsupported YAML tag {node.tag}")
        self._active.add(id(node))
        try:
            if isinstance(node, MappingNode):
                return self._mapping(node, path)
            if isinstance(node, SequenceNode):
                return [self._item(item, path + (index,)) for index, item in enumerate(node.value)]
        finally:
            self._active.discard(id(node))
        return self._refuse(path, f"unsupported YAML node {node.tag}")

    def _refuse(self, path: KeyPath, message: str) -> None:
        """Report ``message`` at ``path``; its value is left out of validation."""
        self.issues.append(self.document.issue(path, message))
        self.document.failed.add(path)

    def _item(self, node: Node, path: KeyPath) -> Any:
        self.document.lines[path] = node.start_mark.line + 1
        return self.build(node, path)

    def _mapping(self, node: MappingNode, path: KeyPath) -> dict[str, Any]:
        result: dict[str, Any] = {}
        first_line: dict[str, int] = {}
        for key_node, value_node in node.value:
            line = key_node.start_mark.line + 1
            if not isinstance(key_node, ScalarNode):
                self.issues.append(
                    self.document.issue(
                        path, "a key must be a plain name, not a list or mapping", line
                    )
                )
                continue
            # Keys are names, whatever YAML 1.1 would make of them: `null:` or `on:` stay strings.
            key = str(key_node.value)
            if key in first_line:
                self.issues.append(
                    self.document.issue(
                        path + (key,),
                        f"duplicate key (first defined on line {first_line[key]})",
                        line,
                    )
                )
                continue
            first_line[key] = line
            self.document.lines[path + (key,)] = line
            result[key] = self.build(value_node, path + (key,))
        return result

    def _scalar(self, node: ScalarNode, path: KeyPath) -> Any:
        try:
            if node.tag != _STR_TAG or "$" not in node.value or self.interpolator is None:
                return self.constructor.construct_object(node, deep=True)
            text, problems = self.interpolator.substitute(node.value)
            if problems:
                self.issues.extend(self.document.issue(path, problem) for problem in problems)
                self.document.failed.add(path)
                return node.value
            if node.style is not None or text == node.value:
                return text
            # Plain scalars are re-read as YAML so ${N:-200} is an int, ${X:-true} a bool.
            tag = self.resolver.resolve(ScalarNode, text, (True, False))
            return self.constructor.construct_object(ScalarNode(tag, text), deep=True)
        except yaml.YAMLError as exc:
            return self._refuse(path, f"invalid value: {_yaml_problem(exc)}")


class _TooManyValues(Exception):
    """The document expands past ``MAX_VALUES`` values (an alias bomb)."""

    def __init__(self, path: KeyPath) -> None:
        super().__init__(format_key(path))
        self.path = path


def _yaml_problem(exc: yaml.YAMLError) -> str:
    if not isinstance(exc, yaml.MarkedYAMLError):
        return str(exc) or "invalid YAML"
    problem = exc.problem or "invalid YAML"
    if exc.context:
        context = exc.context
        mark, where = exc.context_mark, exc.problem_mark
        if mark is not None and (where is None or mark.line != where.line):
            context += f" started on line {mark.line + 1}"
        problem += f" ({context})"
    return problem


def load_document(
    path: Path, interpolator: Interpolator | None = None
) -> tuple[Document | None, list[ConfigIssue]]:
    """Parse ``path`` into a :class:`Document`, interpolating string scalars.

    Returns the document (None when the file cannot be read or parsed) and every issue found:
    an unreadable file, malformed YAML (at the parser's line), duplicate keys, a missing
    variable. Only safe YAML is accepted: no Python tags.
    """
    file = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None, [ConfigIssue(file, None, "", "file not found")]
    except IsADirectoryError:
        return None, [ConfigIssue(file, None, "", "is a directory, not a YAML file")]
    except OSError as exc:
        return None, [ConfigIssue(file, None, "", f"cannot read the file: {exc.strerror}")]
    except UnicodeDecodeError:
        return None, [ConfigIssue(file, None, "", "not UTF-8 text")]
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        return None, [ConfigIssue(file, line, "", f"invalid YAML: {_yaml_problem(exc)}")]
    except yaml.YAMLError as exc:
        return None, [ConfigIssue(file, None, "", f"invalid YAML: {_yaml_problem(exc)}")]
    document = Document(path=path, data=None)
    if root is None:
        return document, []
    builder = _Builder(document, interpolator)
    try:
        document.data = builder.build(root, ())
    except _TooManyValues as exc:
        # Values reached through aliases carry their anchor's line: name the top-level key.
        line = document.line(exc.path[:1])
        message = (
            f"refused: the document expands to more than {MAX_VALUES:,} values through YAML "
            "aliases (*name); write the values out or use fewer aliases"
        )
        return None, [ConfigIssue(file, line, format_key(exc.path[:1]), message)]
    return document, builder.issues
