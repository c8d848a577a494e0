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


# The plain kinds a key holds by value (the common case, checked first: a key is built
# on every call); any subclass or NumPy scalar goes through the general checks.
_PLAIN = frozenset({int, float, str, bool, type(None)})


def frozen(value):
    """A hashable key for a parameter that keeps its kind (see the module docstring)."""
    kind = type(value)
    if kind in _PLAIN:
        return (kind.__name__, value)
    if kind is tuple and all(type(v) is int for v in value):
        # (a shape: its ints as they are; the general form below wraps every entry in
        # a (kind, value) pair, so the two never compare equal)
        return ("tuple",) + value
    if isinstance(value, (tuple, list)):
        return (kind.__name__,) + tuple(frozen(v) for v in value)
    if isinstance(value, (int, float, str, np.integer, np.floating, np.bool_)):
        return (kind.__name__, value)
    return (kind.__name__, id(value))  # anything else: never shared


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
        plan = self._plans.get(key)   # (one call each: atomic, with no lock on a hit)
        if plan is not None:
            try:
                self._plans.move_to_end(key)
            except KeyError:   # evicted by another thread meanwhile: still a valid plan
                pass
            return plan
        plan = make()
        with self._lock:
            self._plans[key] = plan
            if len(self._plans) > self.size:
                self._plans.popitem(last=False)
        return plan
