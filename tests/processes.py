"""Driving a child process from a test: signal it at the right moment, never leave it behind."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable


def signal_when_ready(
    child: subprocess.Popen[str],
    ready: Callable[[], bool],
    signum: int,
    *,
    timeout: float,
) -> str:
    """Send ``signum`` once ``ready()`` holds, wait for the child and return its stderr.

    Fails if the child exits first or ``ready`` does not hold within ``timeout``; the child is
    killed whenever the test fails on the way.
    """
    try:
        deadline = time.monotonic() + timeout
        while not ready():
            if child.poll() is not None:
                raise AssertionError(
                    f"the child exited before it was ready: {child.communicate()[1]}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(f"the child was not ready within {timeout:g} s")
            time.sleep(0.01)
        child.send_signal(signum)
        _out, err = child.communicate(timeout=timeout)
        return err
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
