"""How the compiled kernels were built and what they use at run time.

``show_config()`` is the first thing to ask for in a bug report: it prints the version,
the compiler and flags the kernels were built with, whether OpenMP is on and how many
threads the kernels use, and which micro-kernel (AVX-512, AVX2, baseline or scalar) the
running CPU selected.  There is no BLAS: every convolution pass runs on convkern's own
GEMM micro-kernels (``src/ukernel.h``).
"""

from __future__ import annotations

import os
import platform
import sys
from typing import Any, TextIO

from . import _conv, _isa, _openmp
from ._threads import get_num_threads
from ._version import __version__

try:  # written by setup.py at build time
    from ._build_info import BUILD_INFO
except ImportError:  # pragma: no cover - only for a tree built some other way
    BUILD_INFO = {}

__all__ = ["show_config", "openmp_enabled", "get_config"]

# Substrings that identify an OpenMP runtime library in the process's memory map.
_OPENMP_LIBRARIES = ("libgomp", "libomp", "libiomp", "vcomp")


def openmp_enabled() -> bool:
    """Return True if the compiled kernels were built with OpenMP (and can use threads)."""
    return bool(_openmp.openmp_enabled())


def _openmp_runtime() -> list[str]:
    """Paths of the OpenMP runtime libraries mapped into this process (Linux only)."""
    try:
        with open("/proc/self/maps") as f:
            lines = f.read().splitlines()
    except OSError:
        return []
    found = []
    for line in lines:
        path = line.split(maxsplit=5)[-1] if line.count(" ") >= 5 else ""
        name = os.path.basename(path)
        if path.startswith("/") and name.startswith(_OPENMP_LIBRARIES) and path not in found:
            found.append(path)
    return found


def _kernel() -> tuple[str, str]:
    """(ISA name, block shapes as text) of the micro-kernels the kernels selected."""
    info = _conv.kernel_info()  # {"isa": name, "float32": {"gemm": (mr, nr), ...}, ...}
    parts = []
    for key, value in info.items():
        if key != "isa":
            shapes = ", ".join(f"{k} {'x'.join(map(str, v))}" for k, v in value.items())
            parts.append(f"{key}: {shapes}")
    return info["isa"], "; ".join(parts)


def get_config() -> dict[str, Any]:
    """Return what :func:`show_config` prints, as a dict (keys are stable for tests)."""
    name, blocks = _kernel()
    return {
        "version": __version__,
        "python": f"{platform.python_version()} ({platform.python_implementation()})",
        "platform": f"{sys.platform}-{platform.machine()}",
        "compiler": BUILD_INFO.get("compiler", "unknown"),
        "compiler_version": BUILD_INFO.get("compiler_version", "unknown"),
        "cc": BUILD_INFO.get("cc", ""),
        "cflags": BUILD_INFO.get("cflags", ""),
        "ldflags": BUILD_INFO.get("ldflags", ""),
        "extra_cflags": BUILD_INFO.get("extra_cflags", ""),
        "debug": bool(BUILD_INFO.get("debug", False)),
        "stripped": bool(BUILD_INFO.get("stripped", False)),
        "build_platform": BUILD_INFO.get("platform", ""),
        "macosx_deployment_target": BUILD_INFO.get("macosx_deployment_target", ""),
        "openmp": openmp_enabled(),
        "openmp_flags": BUILD_INFO.get("openmp_flags", ""),
        "openmp_runtime": _openmp_runtime(),
        "num_threads": get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "cpu_count": os.cpu_count(),
        "kernel": name,
        "cpu_isa": _isa.cpu_isa(),
        "forced_isa": _isa.FORCED,
        "kernel_blocks": blocks,
        "blas": None,
    }


def show_config(file: TextIO | None = None) -> None:
    """Print how convkern was built and what it uses at run time.

    Parameters
    ----------
    file : file-like, optional
        Where to print; default ``sys.stdout``.

    Examples
    --------
    >>> import convkern
    >>> convkern.show_config()  # doctest: +SKIP
    convkern 0.1.0
      python          3.11.7 (CPython) on linux-x86_64
      compiler        unix: gcc (Debian 12.2.0-14+deb12u1) 12.2.0
      ...
      OpenMP          on (-fopenmp -fopenmp); runtime .../libgomp-...so.1.0.0
      threads         2 (OMP_NUM_THREADS unset; 2 CPUs)
      micro-kernel    avx512 (float32: gemm 8x32, ...; float64: gemm 8x16, ...)
      BLAS            none (own GEMM micro-kernels)
    """
    c = get_config()
    out = sys.stdout if file is None else file
    if c["openmp"]:
        runtime = ", ".join(c["openmp_runtime"]) or "(library path shown on Linux only)"
        openmp = f"on ({c['openmp_flags'] or 'flags unknown'}); runtime {runtime}"
    else:
        openmp = "off (serial kernels)"
    omp_env = c["omp_num_threads"]
    threads_note = "unset" if omp_env is None else repr(omp_env)
    build = "debug (checks on, -O0)" if c["debug"] else "release"
    build += ", stripped" if c["stripped"] else ", not stripped"
    rows = [
        ("python", f"{c['python']} on {c['platform']}"),
        ("compiler", f"{c['compiler']}: {c['compiler_version']}"),
        ("compiler cmd", c["cc"]),
        ("compile flags", c["cflags"] or "(none)"),
        ("link flags", c["ldflags"] or "(none)"),
        ("build", build),
        ("OpenMP", openmp),
        ("threads", f"{c['num_threads']} (OMP_NUM_THREADS {threads_note}; "
                    f"{c['cpu_count']} CPUs)"),
        ("micro-kernel", f"{c['kernel']} ({c['kernel_blocks']})"),
        ("instruction set", f"{c['kernel']}, " + (
            f"forced by CONVKERN_ISA (CPU has {c['cpu_isa']})" if c["forced_isa"]
            else "the CPU's widest (set CONVKERN_ISA to lower it)")),
        ("BLAS", "none (own GEMM micro-kernels)"),
    ]
    if c["macosx_deployment_target"]:
        rows.insert(5, ("macOS target", c["macosx_deployment_target"]))
    print(f"convkern {c['version']}", file=out)
    for key, value in rows:
        print(f"  {key:<15} {value}", file=out)
