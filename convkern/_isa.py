"""The instruction-set level of the compiled kernels, and forcing it with ``CONVKERN_ISA``.

The kernels (GEMM and dot micro-kernels, max-pool rows) run at the widest level the CPU
has: ``'avx512'`` (AVX-512 F/BW/DQ/VL), ``'avx2'`` (AVX2 + FMA) or ``'baseline'`` (the
build's target, SSE2 on x86-64).  ``CONVKERN_ISA=baseline|avx2|avx512``, read when
``convkern`` is imported, lowers it, to test or compare the narrower kernels on a wide
CPU.  An unknown name, or a level the CPU lacks, is an ImportError that says what the
CPU supports.  ``src/cpu_isa.h`` reads the same variable when the kernels are selected;
it can only lower the level, so a value refused here never runs.
"""

import os

from . import _conv

__all__ = ["LEVELS", "ENV", "check_forced_isa", "cpu_isa"]

LEVELS = ("baseline", "avx2", "avx512")
ENV = "CONVKERN_ISA"


def cpu_isa():
    """The widest level the running CPU supports."""
    return _conv.cpu_isa()


def check_forced_isa():
    """Return the level ``CONVKERN_ISA`` forces, or None when it is unset or empty.

    Raises
    ------
    ImportError
        For a name not in :data:`LEVELS`, or a level above the CPU's.
    """
    want = os.environ.get(ENV, "")
    if want == "":
        return None
    cpu = cpu_isa()
    supported = ", ".join(LEVELS[: LEVELS.index(cpu) + 1])
    if want not in LEVELS:
        raise ImportError(
            f"{ENV}={want!r} is not an instruction-set level: use one of {', '.join(LEVELS)} "
            f"(this CPU supports {supported})"
        )
    if LEVELS.index(want) > LEVELS.index(cpu):
        raise ImportError(
            f"{ENV}={want!r}, but this CPU supports only {supported}; unset {ENV} to use "
            f"the widest ({cpu})"
        )
    return want


FORCED = check_forced_isa()
