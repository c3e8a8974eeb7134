"""Where credentials come from: the environment first, then a secrets directory.

Container platforms (Docker and Kubernetes secrets) mount each secret as a file named after it,
so ``SALESFORCE_PASSWORD`` may arrive as ``/run/secrets/salesforce_password``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

DEFAULT_SECRETS_DIR = Path("/run/secrets")
SECRETS_DIR_VARIABLE = "PLS_SYNC_SECRETS_DIR"

# A secret name becomes a file name: keep it to a plain identifier so that no name can
# reach outside the secrets directory.
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def get_secret(
    name: str,
    env: Mapping[str, str] | None = None,
    secrets_dir: Path | None = None,
) -> str | None:
    """The value of secret ``name``, stripped, or ``None`` when it is not set anywhere.

    The environment variable ``name`` wins; an empty one counts as unset. Otherwise the file
    ``<secrets dir>/<name in lower case>`` is read, where the directory is ``secrets_dir``,
    else ``PLS_SYNC_SECRETS_DIR`` from ``env``, else ``/run/secrets``.
    """
    if not _NAME.match(name):
        raise ValueError(f"invalid secret name {name!r}")
    env = os.environ if env is None else env
    value = env.get(name)
    if value is not None and value.strip():
        return value.strip()
    if secrets_dir is None:
        configured = env.get(SECRETS_DIR_VARIABLE)
        secrets_dir = Path(configured) if configured else DEFAULT_SECRETS_DIR
    try:
        text = (secrets_dir / name.lower()).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    text = text.strip()
    return text or None
