"""Secrets come from the environment first, then from a secrets directory (Docker/K8s style)."""

from __future__ import annotations

from pathlib import Path

import pytest

from connectors.credentials import get_secret


def test_environment_variable_wins_and_is_stripped(tmp_path: Path) -> None:
    (tmp_path / "salesforce_password").write_text("from-file")
    env = {"SALESFORCE_PASSWORD": "  from-env\n"}
    assert get_secret("SALESFORCE_PASSWORD", env, tmp_path) == "from-env"


def test_file_named_in_lower_case_is_read_and_stripped(tmp_path: Path) -> None:
    (tmp_path / "salesforce_password").write_text("s3cret-value\n")
    assert get_secret("SALESFORCE_PASSWORD", {}, tmp_path) == "s3cret-value"


def test_empty_environment_variable_falls_back_to_the_file(tmp_path: Path) -> None:
    (tmp_path / "hubspot_token").write_text("pat-na1-file")
    assert get_secret("HUBSPOT_TOKEN", {"HUBSPOT_TOKEN": "   "}, tmp_path) == "pat-na1-file"


def test_secrets_dir_comes_from_pls_sync_secrets_dir(tmp_path: Path) -> None:
    (tmp_path / "salesforce_security_token").write_text("tok-123")
    env = {"PLS_SYNC_SECRETS_DIR": str(tmp_path)}
    assert get_secret("SALESFORCE_SECURITY_TOKEN", env) == "tok-123"


def test_explicit_secrets_dir_beats_the_environment_setting(tmp_path: Path) -> None:
    chosen, other = tmp_path / "chosen", tmp_path / "other"
    chosen.mkdir()
    other.mkdir()
    (chosen / "x_key").write_text("chosen")
    (other / "x_key").write_text("other")
    env = {"PLS_SYNC_SECRETS_DIR": str(other)}
    assert get_secret("X_KEY", env, chosen) == "chosen"


def test_missing_everywhere_or_empty_file_is_none(tmp_path: Path) -> None:
    assert get_secret("NOT_SET_ANYWHERE", {}, tmp_path) is None
    (tmp_path / "blank").write_text("\n  \n")
    assert get_secret("BLANK", {}, tmp_path) is None
    assert get_secret("X", {}, tmp_path / "no-such-dir") is None


def test_a_directory_in_place_of_the_file_is_none(tmp_path: Path) -> None:
    (tmp_path / "weird").mkdir()
    assert get_secret("WEIRD", {}, tmp_path) is None


@pytest.mark.parametrize("name", ["../etc/passwd", "a/b", "", "A-B", "x.y"])
def test_names_that_could_leave_the_directory_are_refused(name: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        get_secret(name, {}, tmp_path)
