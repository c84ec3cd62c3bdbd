"""Crash-only batch completion: a batch is either finished or the process is gone.

A batch that failed half-way (outputs sent, state not written) must not be followed by a
commit or by the next batch: the state would no longer match the outputs. So every stage runs
its batches and ticks through :func:`complete`:

- an unexpected error ends the process at once with exit code 70 (``os._exit``: no commit, no
  shutdown hooks that could commit). The supervisor (compose ``restart:``, systemd, k8s)
  restarts the worker, which restores state and position from the changelog and goes on:
  outputs are at-least-once and state is applied exactly once;
- a cancellation (shutdown) does not abandon a half-sent batch: the batch runs to its end
  (bounded), then the cancellation proceeds.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Coroutine
from typing import Any, NoReturn, TypeVar

log = logging.getLogger(__name__)

#: How long a cancelled stage waits for its in-flight batch (a produce retry loop may be running).
CANCEL_GRACE_S = 60.0
EXIT_CODE = 70  # EX_SOFTWARE
T = TypeVar("T")


def die(what: str, exc: BaseException) -> NoReturn:
    log.critical("%s failed; exiting so no offset is committed past it (restart resumes exactly)", what,
                 exc_info=(type(exc), exc, exc.__traceback__))
    for handler in logging.getLogger().handlers:
        handler.flush()
    sys.stderr.flush()
    os._exit(EXIT_CODE)


async def complete(work: Coroutine[Any, Any, T], what: str) -> T:
    task = asyncio.ensure_future(work)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        if not task.done():
            try:
                await asyncio.wait_for(asyncio.shield(task), CANCEL_GRACE_S)
            except BaseException as exc:  # timed out or failed while shutting down
                die(what, exc)
        elif not task.cancelled() and task.exception() is not None:
            die(what, task.exception())  # type: ignore[arg-type]
        raise
    except BaseException as exc:
        die(what, exc)
