"""Whether a process is alive: the workers of one gateway leave files behind in the
directory they share (readiness marks, control reports, drift totals), and a file of a
worker that was killed outright must stop counting."""

from __future__ import annotations

import os


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True
