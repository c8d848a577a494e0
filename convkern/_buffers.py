"""Arrays a layer owns, kept per input shape and reused across steps.

A layer looks up its entry for the ``(shape, dtype)`` of each input: the entry holds the
plan of that shape (the validated geometry) and the layer's outputs, gradients and
scratch arrays for it, so that after the first step of a shape no large array is
allocated. A layer fed alternating batch sizes keeps an entry for each (the least
recently used one goes beyond ``MAX_SHAPES``).
"""

import numpy as np

from ._validation import empty_aligned

MAX_SHAPES = 4


def _overlaps(a, others):
    for b in others:
        if b is not None and np.may_share_memory(a, b):
            return True
    return False


class Entry:
    """The plan and the owned arrays of one input shape.

    Attributes
    ----------
    plan : object or None
        What the layer built for this shape (``None`` for layers without one).
    arrays : dict of str to ndarray
        The owned arrays, by name.
    """

    __slots__ = ("plan", "arrays")

    def __init__(self, plan):
        self.plan = plan
        self.arrays = {}

    def array(self, name, shape, dtype, *avoid):
        """Return the owned array ``name``, allocated on first use.

        A fresh one replaces it when it shares memory with any array in ``avoid`` (a
        caller that hands the layer its own output back as an input).
        """
        a = self.arrays.get(name)
        if a is None or _overlaps(a, avoid):
            a = self.arrays[name] = empty_aligned(shape, dtype)
        return a


class ShapeCache:
    """Entries by input ``(shape, dtype)``, most recently used last.

    Parameters
    ----------
    make_plan : callable or None
        ``make_plan(shape, dtype)`` builds the plan of a new shape (and raises for an
        input the layer cannot take); None for layers without a plan.
    """

    def __init__(self, make_plan=None):
        self._make_plan = make_plan
        self._entries = {}

    def entry(self, x):
        """Return the entry for ``x``'s shape and dtype, creating it on first use."""
        key = (x.shape, x.dtype)
        entry = self._entries.pop(key, None)
        if entry is None:
            entry = Entry(self._make_plan(x.shape, x.dtype) if self._make_plan else None)
            if len(self._entries) >= MAX_SHAPES:
                del self._entries[next(iter(self._entries))]
        self._entries[key] = entry
        return entry
