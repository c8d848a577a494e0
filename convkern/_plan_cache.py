"""The small cache of plans behind the functional API.

A function looks its plan up by the shapes, the dtype and its parameters exactly as
given; a repeated call neither validates the parameters nor plans again.  Keys tell
``1``, ``True``, ``1.0`` and ``np.int64(1)`` apart, so a parameter of a new kind is
validated (and refused or accepted) on its own.
"""

import threading
from collections import OrderedDict

import numpy as np

# Plans of recent calls, most recent last.
CACHE_SIZE = 256


def frozen(value):
    """A hashable key for a parameter that keeps its kind (see the module docstring)."""
    if isinstance(value, (tuple, list)):
        return (type(value).__name__,) + tuple(frozen(v) for v in value)
    if isinstance(value, (int, float, str, np.integer, np.floating, np.bool_)) or value is None:
        return (type(value).__name__, value)
    return (type(value).__name__, id(value))  # anything else: never shared


class PlanCache:
    """A thread-safe LRU map from call keys to plans."""

    def __init__(self, size=CACHE_SIZE):
        self.size = size
        self._plans = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self):
        return len(self._plans)

    def clear(self):
        with self._lock:
            self._plans.clear()

    def get(self, key, make):
        """The plan stored under ``key``, or ``make()`` stored there (its errors propagate)."""
        with self._lock:
            plan = self._plans.get(key)
            if plan is not None:
                self._plans.move_to_end(key)
                return plan
        plan = make()
        with self._lock:
            self._plans[key] = plan
            if len(self._plans) > self.size:
                self._plans.popitem(last=False)
        return plan
