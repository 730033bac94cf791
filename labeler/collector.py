"""Python's garbage collector, set for what a command does: import a great deal, then make many calls.

Both make objects by the hundred thousand, few of them garbage, and with Python's defaults the collector
walks them again and again (a pass every 700 new objects; now and then a full one over all that exist).
A larger first generation makes fewer passes; freezing what exists when calls begin keeps the full
passes to what the calls make. bench/run_throughput.py prints the collector's time and the imports'.
"""

from __future__ import annotations

import gc
import threading
from contextlib import contextmanager

FIRST_GENERATION = 7000  # new objects between passes (Python's default: 700)

_runs = {"count": 0, "threshold": None}
_lock = threading.Lock()


def for_commands() -> None:
    """The command's setting, from its start (its imports are most of its start)."""
    gc.set_threshold(FIRST_GENERATION, *gc.get_threshold()[1:])


@contextmanager
def for_calls():
    """While calls run: what exists is frozen (kept, and skipped by the collector) and the first generation is
    larger; both are undone when the process's last run ends (runs may overlap)."""
    with _lock:
        _runs["count"] += 1
        if _runs["count"] == 1:
            _runs["threshold"] = gc.get_threshold()
            gc.freeze()
            gc.set_threshold(FIRST_GENERATION, *_runs["threshold"][1:])
    try:
        yield
    finally:
        with _lock:
            _runs["count"] -= 1
            if _runs["count"] == 0:
                gc.set_threshold(*_runs["threshold"])
                gc.unfreeze()
