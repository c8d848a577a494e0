"""Describe the machine and the library versions of a run."""

import contextlib
import io
import json
import os
import platform
import time

import numpy as np


def _cpu_model():
    """Return the CPU model name from /proc/cpuinfo, else ``platform.processor()``."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _show_config(convkern):
    """Return convkern's ``show_config()`` as text ('' if it has none)."""
    show = getattr(convkern, "show_config", None)
    if show is None:
        return ""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        result = show()
    if result is None:
        return buf.getvalue().strip()
    return result if isinstance(result, str) else json.dumps(result, default=str)


def machine_info(peers, numpy_blas):
    """Collect CPU, core count, versions and convkern's build configuration.

    Parameters
    ----------
    peers : list
        The peers of the run (convkern first).
    numpy_blas : threadpoolctl controller or None
        NumPy's BLAS (see :func:`peers.numpy_blas_controller`).

    Returns
    -------
    dict
    """
    convkern = peers[0].lib
    info = {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "numpy_blas": ", ".join(
            f"{lib['internal_api']} {lib['version']} ({lib['architecture']})"
            for lib in numpy_blas.info()
        ) if numpy_blas else "unknown (threadpoolctl not installed)",
        "convkern": getattr(convkern, "__version__", "unknown"),
        "convkern_path": str(next(iter(convkern.__path__))),
        "convkern_config": _show_config(convkern),
    }
    for peer in peers:
        if peer.name == "torch":
            info["torch"] = peer.torch.__version__
    return info


def machine_line(info):
    """Return a one-line summary of :func:`machine_info`."""
    torch = f", torch {info['torch']}" if "torch" in info else ""
    return (
        f"{info['cpu']}, {info['usable_cores']} of {info['cores']} cores; "
        f"Python {info['python']}, numpy {info['numpy']} [{info['numpy_blas']}]"
        f"{torch}, convkern {info['convkern']}"
    )


def cpu_snapshot():
    """Return ``(wall s, busy CPU s of the machine, CPU s of this process)``.

    Machine busy time is user + nice + system + irq + softirq + steal from
    /proc/stat; None on systems without /proc.
    """
    try:
        with open("/proc/stat") as f:
            ticks = [int(v) for v in f.readline().split()[1:9]]
        with open("/proc/self/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    hz = os.sysconf("SC_CLK_TCK")
    busy = sum(ticks) - ticks[3] - ticks[4]  # minus idle and iowait
    own = int(fields[11]) + int(fields[12])  # utime + stime, all threads
    return time.monotonic(), busy / hz, own / hz


def foreign_load(start, end):
    """Average number of cores kept busy by other processes between two snapshots.

    Parameters
    ----------
    start, end : tuple or None
        Results of :func:`cpu_snapshot`.

    Returns
    -------
    float or None
    """
    if start is None or end is None:
        return None
    wall = end[0] - start[0]
    return max(0.0, ((end[1] - start[1]) - (end[2] - start[2])) / wall)
