"""Every micro-kernel in src/ukernel.h that this CPU can run, against plain loops.

convkern picks the widest ISA at import, so the suite's conv tests exercise one set of
kernels; this compiles tests/ukernel_check.c (with the compiler that built Python) and
runs the AVX-512, AVX2 and baseline kernels side by side, including the vector-row
stride and dot-product folds.  Skipped when there is no C compiler or no src/ tree
(tests run against an installed wheel).
"""

import os
import shlex
import shutil
import subprocess
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src"


def _compiler():
    cc = shlex.split(sysconfig.get_config_var("CC") or "cc")
    return cc if shutil.which(cc[0]) else None


@pytest.mark.skipif(not (SRC / "ukernel.h").exists(), reason="no src/ tree")
@pytest.mark.skipif(_compiler() is None, reason="no C compiler")
def test_every_micro_kernel_matches_plain_loops(tmp_path):
    exe = tmp_path / "ukernel_check"
    cmd = _compiler() + [
        "-O2", "-o", str(exe), str(ROOT / "tests" / "ukernel_check.c"),
        f"-I{SRC}", f"-I{sysconfig.get_paths()['include']}", "-lm",
    ]
    # a sanitizer runtime preloaded into the test process stays out of gcc and the check
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    build = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert build.returncode == 0, build.stderr
    run = subprocess.run([str(exe)], capture_output=True, text=True, timeout=60, env=env)
    assert run.returncode == 0, run.stdout + run.stderr
    checked = [line for line in run.stdout.splitlines() if line.startswith("ok ")]
    assert any("_baseline_" in line or "_scalar_" in line for line in checked), run.stdout
