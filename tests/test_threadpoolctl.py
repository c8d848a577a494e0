"""threadpoolctl's OpenMP limit reaches convkern's kernels.

``threadpool_limits(n, 'openmp')`` calls ``omp_set_num_threads(n)`` in every OpenMP
runtime loaded.  Without a ``set_num_threads`` count convkern reads
``omp_get_max_threads()`` on every call, so its thread count follows; an explicit
``set_num_threads(n)`` wins.  The kernels' real thread use is observed in a child
interpreter: libgomp keeps the worker threads of a parallel region alive, so a call that
ran on two threads leaves one more thread in ``/proc/self/task``.

In this process other test modules call ``torch.set_num_threads(1)``, which (when
PyTorch loads the same libgomp) lowers OpenMP's value, so the tests set a known outer
limit first.
"""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import convkern as ck

threadpoolctl = pytest.importorskip("threadpoolctl")

pytestmark = pytest.mark.skipif(not ck.openmp_enabled(), reason="serial build: no OpenMP")


@pytest.fixture(autouse=True)
def _restore_thread_count():
    yield
    ck.set_num_threads(None)


def test_threadpoolctl_finds_the_openmp_runtime_convkern_uses():
    apis = {info["user_api"] for info in threadpoolctl.threadpool_info()}
    assert "openmp" in apis


def test_limit_applies_to_the_default_count():
    ck.set_num_threads(None)
    with threadpoolctl.threadpool_limits(2, user_api="openmp"):
        assert ck.get_num_threads() == 2
        with threadpoolctl.threadpool_limits(1, user_api="openmp"):
            assert ck.get_num_threads() == 1
        assert ck.get_num_threads() == 2


def test_an_explicit_set_num_threads_wins_over_the_limit():
    with threadpoolctl.threadpool_limits(1, user_api="openmp"):
        ck.set_num_threads(2)
        assert ck.get_num_threads() == 2
        ck.set_num_threads(None)
        assert ck.get_num_threads() == 1


def test_limits_on_blas_only_leave_convkern_alone():
    with threadpoolctl.threadpool_limits(2, user_api="openmp"):
        with threadpoolctl.threadpool_limits(1, user_api="blas"):
            assert ck.get_num_threads() == 2


_CHILD = textwrap.dedent("""
    import os, sys
    import numpy as np
    import convkern as ck
    from threadpoolctl import threadpool_limits

    def tasks():
        return len(os.listdir("/proc/self/task"))

    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 16, 32, 32)).astype(np.float32)
    w = rng.standard_normal((16, 16, 3, 3)).astype(np.float32)
    assert ck.get_num_threads() == 2, ck.get_num_threads()  # OMP_NUM_THREADS=2
    start = tasks()
    if sys.argv[1] == "limited":
        with threadpool_limits(1, user_api="openmp"):
            for _ in range(3):
                ck.conv_forward(x, w, padding=1)
    else:
        for _ in range(3):
            ck.conv_forward(x, w, padding=1)
    print(tasks() - start)
""")


def _new_threads(mode):
    root = os.path.dirname(os.path.dirname(os.path.abspath(ck.__file__)))
    path = os.environ.get("PYTHONPATH")
    env = dict(os.environ, PYTHONPATH=root + (os.pathsep + path if path else ""))
    env["OMP_NUM_THREADS"] = "2"
    out = subprocess.run([sys.executable, "-c", _CHILD, mode], env=env, capture_output=True,
                         text=True, timeout=120, check=True)
    return int(out.stdout.strip())


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="needs Linux /proc")
def test_kernels_start_no_openmp_worker_under_the_limit():
    # control: the same calls without the limit start libgomp's worker thread
    assert _new_threads("free") >= 1
    assert _new_threads("limited") == 0


def test_results_do_not_depend_on_the_limit():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((8, 16, 32, 32)).astype(np.float32)
    w = rng.standard_normal((16, 16, 3, 3)).astype(np.float32)
    with threadpoolctl.threadpool_limits(2, user_api="openmp"):
        free = ck.conv_forward(x, w, padding=1)
        with threadpoolctl.threadpool_limits(1, user_api="openmp"):
            limited = ck.conv_forward(x, w, padding=1)
    np.testing.assert_array_equal(free, limited)
