"""How many threads a call is worth.

A parallel region costs a few microseconds on idle cores and far more when another
process holds a core (OpenMP threads then wait on each other), so calls split their work
only in pieces of at least ``grain`` units.  Results do not depend on the thread count.
"""

from ._threads import get_num_threads

# Multiply-adds * 2 per thread for a convolution pass (about 10 us of work).
CONV_GRAIN = 2_000_000
# Window taps (max-pool forward) or gradient elements (backward) per thread.
POOL_GRAIN = 250_000


def threads_for(work, grain):
    """Return the thread count for ``work`` units: one thread per ``grain`` units at most."""
    return max(1, min(get_num_threads(), work // grain))
