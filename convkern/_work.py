"""How many threads a call is worth.

A parallel region costs a few microseconds on idle cores and far more when another
process holds a core (OpenMP threads then wait on each other), so calls split their work
only in pieces of at least ``grain`` units.  Results do not depend on the thread count.
"""

from ._threads import get_num_threads

# Multiply-adds * 2 per thread for a convolution pass (about 10 us of work).
CONV_GRAIN = 2_000_000
# The same for layers with one input channel per group: with no reduction over channels
# nothing amortises a load over several multiply-adds (the depthwise path reads an
# input element per multiply-add and copies each input plane once), so 10 us holds
# about 8 times fewer of them.
DEPTHWISE_GRAIN = CONV_GRAIN // 8
# Window taps (max-pool forward) or gradient elements (backward) per thread: a row with
# fewer windows than a vector (small images) scans them one at a time, about a tap per
# nanosecond (Zen 2: a 2x2 pool of 32x128x8x8 took 1.05 ms), so this is about 25 us.
POOL_GRAIN = 25_000
# Elements per thread of an elementwise pass (activations and their gradients with the
# bias sums, the SGD step): 1-4 elements per nanosecond from L2, so about 10-30 us.
# Measured on an AVX-512 Xeon, a ReLU backward with its bias sum: 64 Ki elements take
# 30 us on one thread and 19 on two, 256 Ki 190 and 70 (two cores' L2 hold the three
# arrays that one core's does not).
ELTWISE_GRAIN = 32_768
# Elements of the activations (input and output) per thread of a convolution pass that
# streams more than it multiplies (a 1x1 head of few filters over a large volume: 3-D
# U-Net's 16 -> 2 over 32^3 reads 2 MiB for 2 M multiply-adds x 2): its time is the
# memory's, which two cores read faster than one.
CONV_MEMORY_GRAIN = 250_000


def threads_for(work, grain):
    """Return the thread count for ``work`` units: one thread per ``grain`` units at most."""
    return max(1, min(get_num_threads(), work // grain))
