"""Threads, determinism and fork.

- Concurrent calls from 4 Python threads give exactly (bitwise) the serial results.
- Every public function gives the same bits for set_num_threads(1), (2), (4) and on every
  repeat, including the weight gradient's reduction over the batch (fixed chunk order).
- fork: a child forked after the parent ran threaded kernels must not hang (libgomp's
  thread pool does not survive fork).  convkern's supported behaviour: the kernels run on
  one thread in a fork child (an os.register_at_fork hook), with the same bits; processes
  started with 'spawn' or 'forkserver' use threads as usual.  These run in a subprocess
  with a timeout, so a hang fails the test instead of blocking the suite.
"""

import os
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

import convkern as ck
from convkern._work import CONV_GRAIN, CONV_MEMORY_GRAIN

HAS_FORK = hasattr(os, "fork")


def _env(**extra):
    """Environment for a child interpreter that imports this very convkern."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(ck.__file__)))
    path = os.environ.get("PYTHONPATH")
    return dict(os.environ, PYTHONPATH=root + (os.pathsep + path if path else ""), **extra)


def _cases():
    """(name, function of no arguments) for every public function, on shapes large enough
    that the kernels split the work between threads (several tiles per image, several
    batch chunks for the weight gradient)."""
    rng = np.random.default_rng(1234)
    out = []
    for dt in (np.float32, np.float64):
        out += _dtype_cases(rng, dt)
    return out


def _dtype_cases(rng, dt):
    """The cases of one dtype (a function of its own, so that each closure binds this
    dtype's arrays)."""
    out = []
    n = np.dtype(dt).name

    def r(*shape, dt=dt):
        return rng.standard_normal(shape).astype(dt)
    # 2-D strided (im2col path): groups, asymmetric padding, dilation, tied bias
    x2, w2, b2 = r(8, 16, 40, 36), r(16, 8, 3, 2), r(16)
    kw2 = dict(stride=(2, 1), padding=((1, 2), (0, 1)), dilation=(1, 2), groups=2)
    g2 = r(*ck.conv_forward(x2, w2, b2, **kw2).shape)
    # 2-D stride 1 (direct slab path), several tiles per image
    xs, ws = r(4, 16, 33, 29), r(24, 8, 3, 3)
    kws = dict(padding=1, groups=2)
    gs = r(*ck.conv_forward(xs, ws, **kws).shape)
    # 1-D long batch: the weight gradient splits the batch into chunks
    x1, w1 = r(64, 8, 300), r(8, 8, 5)
    g1 = r(*ck.conv_forward(x1, w1, padding="same").shape)
    # 3-D, untied bias, 'full' padding
    x3, w3 = r(4, 8, 14, 12, 10), r(8, 4, 3, 3, 2)
    kw3 = dict(padding="full", groups=2)
    y3 = ck.conv_forward(x3, w3, **kw3)
    b3, g3 = r(*y3.shape[1:]), r(*y3.shape)
    # unbatched 2-D
    xu, wu = r(8, 30, 30), r(8, 8, 3, 3)
    gu = r(*ck.conv_forward(xu, wu, padding="same").shape)
    # pooling with overlapping windows and ties
    xp = rng.integers(-3, 4, (8, 32, 64, 64)).astype(dt)
    pkw = dict(stride=1, padding=1, ceil_mode=True)
    yp, ip = ck.maxpool_forward(xp, 3, **pkw)
    gp = r(*yp.shape)
    xp3 = r(4, 8, 20, 18, 16)
    pkw3 = dict(stride=1, dilation=(2, 1, 2))
    yp3, ip3 = ck.maxpool_forward(xp3, (2, 3, 2), **pkw3)
    gp3 = r(*yp3.shape)
    out += [
        (f"conv_forward-2d-strided-{n}", lambda: ck.conv_forward(x2, w2, b2, **kw2)),
        (f"conv_forward-2d-stride1-{n}", lambda: ck.conv_forward(xs, ws, **kws)),
        (f"conv_forward-1d-{n}", lambda: ck.conv_forward(x1, w1, padding="same")),
        (f"conv_forward-3d-untied-{n}", lambda: ck.conv_forward(x3, w3, b3, **kw3)),
        (f"conv_forward-unbatched-{n}", lambda: ck.conv_forward(xu, wu, padding="same")),
        (f"conv_backward_input-2d-strided-{n}",
         lambda: ck.conv_backward_input(g2, w2, x2.shape, **kw2)),
        (f"conv_backward_input-2d-stride1-{n}",
         lambda: ck.conv_backward_input(gs, ws, xs.shape, **kws)),
        (f"conv_backward_input-1d-{n}",
         lambda: ck.conv_backward_input(g1, w1, x1.shape, padding="same")),
        (f"conv_backward_input-3d-{n}",
         lambda: ck.conv_backward_input(g3, w3, x3.shape, **kw3)),
        (f"conv_backward_input-unbatched-{n}",
         lambda: ck.conv_backward_input(gu, wu, xu.shape, padding="same")),
        (f"conv_backward_weight-2d-strided-{n}",
         lambda: ck.conv_backward_weight(x2, g2, w2.shape, **kw2)),
        (f"conv_backward_weight-2d-stride1-{n}",
         lambda: ck.conv_backward_weight(xs, gs, ws.shape, **kws)),
        (f"conv_backward_weight-1d-batch64-{n}",
         lambda: ck.conv_backward_weight(x1, g1, w1.shape, padding="same")),
        (f"conv_backward_weight-3d-{n}",
         lambda: ck.conv_backward_weight(x3, g3, w3.shape, **kw3)),
        (f"conv_backward_weight-unbatched-{n}",
         lambda: ck.conv_backward_weight(xu, gu, wu.shape, padding="same")),
        (f"conv_backward_bias-{n}", lambda: ck.conv_backward_bias(g1)),
        (f"conv_backward_bias-untied-{n}", lambda: ck.conv_backward_bias(g3, untied=True)),
        (f"maxpool_forward-2d-{n}", lambda: ck.maxpool_forward(xp, 3, **pkw)),
        (f"maxpool_forward-3d-{n}", lambda: ck.maxpool_forward(xp3, (2, 3, 2), **pkw3)),
        (f"maxpool_backward-2d-{n}", lambda: ck.maxpool_backward(gp, ip, xp.shape)),
        (f"maxpool_backward-3d-{n}", lambda: ck.maxpool_backward(gp3, ip3, xp3.shape)),
    ]
    return out


CASES = _cases()


def _bits(result):
    if isinstance(result, tuple):
        return tuple(_bits(r) for r in result)
    return (result.shape, result.dtype.str, result.tobytes())


@pytest.fixture
def restore_threads(monkeypatch):
    """Reset the thread count afterwards, and make every call use all the threads it is
    given: convkern runs small calls on fewer threads (convkern._work.threads_for), which
    would hide a thread-count dependence on small shapes."""
    for mod in ("convkern.plan", "convkern.pool_plans"):
        monkeypatch.setattr(f"{mod}.threads_for", lambda work, grain: ck.get_num_threads())
    yield
    ck.set_num_threads(None)


@pytest.mark.skipif(not ck._openmp.openmp_enabled(), reason="a build without OpenMP")
def test_small_calls_take_one_thread_and_streaming_ones_more():
    ck.set_num_threads(2)
    try:
        # few multiply-adds over few values: not worth a second thread
        assert ck.conv_plan((1, 4, 8, 8), (4, 4, 3, 3)).num_threads == 1
        # many multiply-adds
        assert ck.conv_plan((1, 64, 32, 32), (64, 64, 3, 3)).num_threads == 2
        # few multiply-adds per value over a large volume (a 1x1 head of two classes):
        # the pass streams memory, which two cores read faster than one
        head = ck.conv_plan((1, 16, 32, 32, 32), (2, 16, 1, 1, 1))
        assert head._flops < 2 * CONV_GRAIN and head.num_threads == 2
        # neither alone is worth two threads, both together are: a 3-channel stem
        stem = ck.conv_plan((1, 3, 32, 32), (64, 3, 3, 3), padding=1)
        assert stem._flops < 2 * CONV_GRAIN and stem._activations < 2 * CONV_MEMORY_GRAIN
        assert stem.num_threads == 2
    finally:
        ck.set_num_threads(None)


@pytest.mark.parametrize("name, fn", CASES, ids=[c[0] for c in CASES])
def test_same_bits_for_any_thread_count_and_every_repeat(name, fn, restore_threads):
    ck.set_num_threads(1)
    expected = _bits(fn())
    for n in (1, 2, 4, 3, 2, 1, 4):
        ck.set_num_threads(n)
        assert ck.get_num_threads() == (n if ck._openmp.openmp_enabled() else 1)
        for _ in range(2):
            assert _bits(fn()) == expected, f"{name}: different bits with {n} threads"


def test_four_python_threads_give_the_serial_results(restore_threads):
    ck.set_num_threads(2)
    serial = {name: _bits(fn()) for name, fn in CASES}
    barrier = threading.Barrier(4)
    errors = []

    def worker(k):
        try:
            barrier.wait()
            order = CASES[k::1] + CASES[:k]  # each thread starts somewhere else
            for _ in range(3):
                for name, fn in order:
                    if _bits(fn()) != serial[name]:
                        errors.append(f"thread {k}: {name} differs from the serial result")
        except Exception as e:  # noqa: BLE001  (reported below)
            errors.append(f"thread {k}: {type(e).__name__}: {e}")

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not any(t.is_alive() for t in threads), "a thread hung"
    assert not errors, errors


def test_thread_count_limits():
    with pytest.raises(ValueError, match="n"):
        ck.set_num_threads(0)
    with pytest.raises(ValueError, match="1024"):
        ck.set_num_threads(1025)  # libgomp aborts or overflows its stack on huge teams
    with pytest.raises((TypeError, ValueError)):
        ck.set_num_threads(True)
    with pytest.raises((TypeError, ValueError)):
        ck.set_num_threads(2.0)


def test_omp_num_threads_is_respected_and_capped():
    code = "import convkern as ck; print(ck.get_num_threads())"
    env = _env(OMP_NUM_THREADS="3")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, timeout=120)
    expected = "3" if ck._openmp.openmp_enabled() else "1"
    assert out.stdout.strip() == expected, out.stderr
    env["OMP_NUM_THREADS"] = "99999999999"  # libgomp would try to start a billion threads
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0 and int(out.stdout) <= 1024, out.stdout + out.stderr


# --------------------------------------------------------------------------------------
# fork
# --------------------------------------------------------------------------------------

FORK_SCRIPT = r"""
import os, sys, time, warnings
import numpy as np
import convkern as ck

rng = np.random.default_rng(0)
x = rng.standard_normal((6, 8, 24, 24)).astype(np.float32)
w = rng.standard_normal((16, 8, 3, 3)).astype(np.float32)
g = rng.standard_normal((6, 16, 22, 22)).astype(np.float32)
def run_all():
    y = ck.conv_forward(x, w)
    gx = ck.conv_backward_input(g, w, x.shape)
    gw = ck.conv_backward_weight(x, g, w.shape)
    gb = ck.conv_backward_bias(g)
    p, i = ck.maxpool_forward(x, 2)
    gp = ck.maxpool_backward(p, i, x.shape)
    return [a.tobytes() for a in (y, gx, gw, gb, p, i, gp)]

ck.set_num_threads(2)
expected = run_all()           # the parent has now used OpenMP threads

pid = os.fork()
if pid == 0:
    try:
        assert ck.get_num_threads() == 1, ck.get_num_threads()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ck.set_num_threads(2)          # refused politely: still one thread
        assert ck.get_num_threads() == 1
        if ck._openmp.openmp_enabled():
            assert any("fork" in str(c.message) for c in caught), caught
        ok = run_all() == expected
        os._exit(0 if ok else 3)
    except BaseException as e:
        print("child failed:", repr(e), file=sys.stderr, flush=True)
        os._exit(4)

deadline = time.time() + 60
while True:
    done, status = os.waitpid(pid, os.WNOHANG)
    if done:
        break
    if time.time() > deadline:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        print("HANG: the forked child did not finish", flush=True)
        sys.exit(5)
    time.sleep(0.02)
code = os.waitstatus_to_exitcode(status)
print("child exit", code, flush=True)
assert run_all() == expected   # the parent's own pool still works after the fork
sys.exit(code)
"""


@pytest.mark.skipif(not HAS_FORK, reason="no os.fork on this platform")
def test_forked_child_after_threads_does_not_hang():
    proc = subprocess.run([sys.executable, "-c", FORK_SCRIPT], capture_output=True,
                          text=True, timeout=180, env=_env())
    assert proc.returncode == 0, proc.stdout + proc.stderr


MP_SCRIPT = r"""
import multiprocessing as mp, sys
import numpy as np
import convkern as ck

def work(seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((4, 8, 20, 20))
    w = rng.standard_normal((8, 8, 3, 3))
    return ck.get_num_threads(), ck.conv_backward_weight(x, ck.conv_forward(x, w), w.shape).tobytes()

if __name__ == "__main__":
    method = sys.argv[1]
    ck.set_num_threads(2)
    serial = [work(s)[1] for s in range(4)]
    with mp.get_context(method).Pool(2) as pool:
        res = pool.map_async(work, range(4)).get(timeout=120)
    assert [r[1] for r in res] == serial, "different bits in the workers"
    threads = {r[0] for r in res}
    if method == "fork":
        assert threads == {1}, threads        # fork children run serially
    print("ok", method, sorted(threads))
"""


@pytest.mark.parametrize("method", ["fork", "forkserver", "spawn"])
def test_multiprocessing_workers_give_the_same_bits(method, tmp_path):
    import multiprocessing as mp
    if method not in mp.get_all_start_methods():
        pytest.skip(f"no {method} start method here")
    script = tmp_path / "mp_check.py"
    script.write_text(MP_SCRIPT)
    proc = subprocess.run([sys.executable, str(script), method], capture_output=True,
                          text=True, timeout=240, env=_env())
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_fork_hook_is_registered():
    """The hook that makes fork children serial must be installed at import."""
    code = textwrap.dedent("""
        import os, convkern as ck, convkern._threads as t
        pid = os.fork()
        if pid == 0:
            os._exit(0 if (t._in_fork_child and ck.get_num_threads() == 1) else 1)
        _, status = os.waitpid(pid, 0)
        raise SystemExit(os.waitstatus_to_exitcode(status) or (1 if t._in_fork_child else 0))
    """)
    if not HAS_FORK:
        pytest.skip("no os.fork on this platform")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, env=_env())
    assert proc.returncode == 0, proc.stderr
