"""The machine's float32 FMA peak, measured by the compiled loop of ``fma_peak.c``.

The C file is compiled with the system C compiler (``$CC``, else ``cc``) into a
temporary shared library and called through ctypes, which releases the GIL: n
threads are n Python threads calling the loop at once.
"""

import ctypes
import os
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

SOURCE = Path(__file__).resolve().parent / "fma_peak.c"
ISA = {16: "AVX-512", 8: "AVX2+FMA", 1: "scalar"}
RUN_SECONDS = 0.1


class FmaPeak:
    """The compiled loop; use as a context manager (removes the temporary library).

    Raises
    ------
    RuntimeError
        If no C compiler is found or the compilation fails.
    """

    def __init__(self):
        cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
        if cc is None:
            raise RuntimeError("no C compiler (cc) found to build bench/fma_peak.c")
        self._dir = tempfile.TemporaryDirectory(prefix="convkern-fma-")
        lib = Path(self._dir.name) / "fma_peak.so"
        cmd = [cc, "-O2", "-shared", "-fPIC", str(SOURCE), "-o", str(lib)]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode:
            self._dir.cleanup()
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stderr}")
        self._lib = ctypes.CDLL(str(lib))
        self._lib.fma_run.restype = ctypes.c_int64
        self._lib.fma_run.argtypes = [ctypes.c_int64]
        self.lanes = self._lib.fma_lanes()
        self.isa = ISA[self.lanes]
        # Iterations for about RUN_SECONDS on one thread.
        self._lib.fma_run(1000)
        t0 = time.perf_counter()
        flops = self._lib.fma_run(100_000)
        rate = flops / (time.perf_counter() - t0)
        self._iters = max(1000, int(RUN_SECONDS * rate / (flops / 100_000)))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._dir.cleanup()

    def gflops(self, threads, repeats=3):
        """Best GFLOP/s of `threads` threads running the loop at once.

        Parameters
        ----------
        threads : int
        repeats : int
            Runs; the fastest counts (the peak is what the core can do).

        Returns
        -------
        float
        """
        best = 0.0
        for _ in range(repeats):
            barrier = threading.Barrier(threads + 1)
            flops = [0] * threads

            def work(i, barrier=barrier, flops=flops):
                barrier.wait()
                flops[i] = self._lib.fma_run(self._iters)

            pool = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
            for t in pool:
                t.start()
            barrier.wait()
            t0 = time.perf_counter()
            for t in pool:
                t.join()
            best = max(best, sum(flops) / (time.perf_counter() - t0) / 1e9)
        return best
