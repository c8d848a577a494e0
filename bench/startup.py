"""Import time of convkern and NumPy in fresh interpreters.

Each statement runs as ``python -c STATEMENT`` from a neutral directory with
convkern's location first on ``PYTHONPATH``; the three statements are
interleaved and the median wall time of a bare ``python -c pass`` is subtracted.
"""

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

STATEMENTS = {"python": "pass", "numpy": "import numpy", "convkern": "import convkern"}


def import_times(convkern_module, repeats):
    """Measure import times.

    Parameters
    ----------
    convkern_module : module
        The convkern that is benchmarked; its parent directory goes first on
        ``PYTHONPATH`` so that the children import the same one.
    repeats : int
        Runs of each statement.

    Returns
    -------
    dict
        Seconds: ``interpreter`` (median start-up), ``numpy`` and ``convkern``
        (median wall time minus start-up; convkern includes its NumPy import).
    """
    root = str(Path(next(iter(convkern_module.__path__))).parent)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    walls = {key: [] for key in STATEMENTS}
    with tempfile.TemporaryDirectory() as cwd:
        for _ in range(repeats):
            for key, stmt in STATEMENTS.items():
                t0 = time.perf_counter()
                subprocess.run([sys.executable, "-c", stmt], cwd=cwd, env=env, check=True)
                walls[key].append(time.perf_counter() - t0)
    start = median(walls["python"])
    return {
        "interpreter": start,
        "numpy": median(walls["numpy"]) - start,
        "convkern": median(walls["convkern"]) - start,
    }
