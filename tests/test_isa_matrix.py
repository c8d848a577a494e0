"""The kernels under every instruction-set level this CPU has, and CONVKERN_ISA's errors.

The suite itself runs at the CPU's widest level; each narrower one (here, on an AVX-512
CPU: avx2 and baseline) runs the convolution and pooling test matrix, every path of
every pass against the float64 reference and PyTorch, in a subprocess with
``CONVKERN_ISA`` set.  ``.ci/run`` also runs the whole suite under each narrower level.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from convkern import _isa

TESTS = Path(__file__).parent
MATRIX = ["test_paths.py", "test_dense.py", "test_conv.py", "test_depthwise.py", "test_pool.py",
          "test_pool_plans.py", "test_plan.py", "test_config.py"]
NARROWER = _isa.LEVELS[: _isa.LEVELS.index(_isa.cpu_isa())]


def _run(code_or_args, isa, **kw):
    env = dict(os.environ, CONVKERN_ISA=isa)
    return subprocess.run([sys.executable, *code_or_args], env=env, capture_output=True,
                          text=True, **kw)


@pytest.mark.skipif(not NARROWER, reason="the CPU has only the baseline level")
@pytest.mark.parametrize("isa", NARROWER)
def test_conv_and_pool_matrix_under_a_narrower_isa(isa):
    result = _run(["-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
                   *[str(TESTS / f) for f in MATRIX]], isa, timeout=1800)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert " passed" in result.stdout


@pytest.mark.parametrize("isa", _isa.LEVELS)
def test_forcing_an_isa_selects_it_or_refuses_clearly(isa):
    code = ("import convkern, convkern._pool as p, convkern._config as c; "
            "print(convkern._conv.kernel_info()['isa'], convkern._conv.depthwise_isa(), "
            "p.kernel_isa(), c.get_config()['forced_isa'])")
    result = _run(["-c", code], isa, timeout=120)
    if isa in NARROWER + (_isa.cpu_isa(),):
        assert result.returncode == 0, result.stderr
        conv, depthwise, pool, forced = result.stdout.split()
        assert conv == isa and depthwise == isa and pool in (isa, "scalar") and forced == isa
    else:
        assert result.returncode != 0
        assert f"CONVKERN_ISA='{isa}', but this CPU supports only" in result.stderr
        assert "ImportError" in result.stderr


def test_show_config_says_the_isa_is_forced():
    result = _run(["-c", "import convkern; convkern.show_config()"], "baseline", timeout=120)
    assert result.returncode == 0, result.stderr
    assert "instruction set baseline, forced by CONVKERN_ISA" in result.stdout


@pytest.mark.parametrize("value", ["sse2", "AVX2", "avx512f"])
def test_an_unknown_isa_name_is_an_import_error(value):
    result = _run(["-c", "import convkern"], value, timeout=120)
    assert result.returncode != 0
    assert "is not an instruction-set level: use one of baseline, avx2, avx512" in result.stderr


def test_an_empty_value_means_unset():
    result = _run(["-c", "import convkern; print(convkern._conv.kernel_info()['isa'])"], "",
                  timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == _isa.cpu_isa()


def test_bias_sums_have_the_same_bits_on_every_isa():
    """The bias sums (bias_sum.h's 16 double lanes folded in halves) run on AVX-512
    vectors where the CPU has them and on SSE2 pairs otherwise: the same additions in the
    same order, so the same bits, for float32 and float64, with tails of fewer than 16
    positions, rows shorter than 16 and signed zeros; fused into a weight gradient too."""
    code = """if True:
        import hashlib, numpy as np, convkern as ck
        rng = np.random.default_rng(1)
        h = hashlib.sha256()
        for dt in (np.float32, np.float64):
            for shape in [(3, 5, 17), (2, 7, 16), (1, 3, 15), (4, 9, 33, 7), (2, 4, 100)]:
                gy = rng.standard_normal(shape) * 10.0 ** rng.integers(-20, 20, shape)
                gy = gy.astype(dt)
                gy.flat[::7] = -0.0
                h.update(ck.conv_backward_bias(gy).tobytes())
                x = rng.standard_normal((shape[0], 3) + shape[2:]).astype(dt)
                plan = ck.conv_plan(x.shape, (shape[1], 3) + (1,) * (len(shape) - 2),
                                    dtype=dt, bias="tied")
                h.update(plan.backward_weight_bias(x, gy)[1].tobytes())
        print(h.hexdigest())
    """
    digests = set()
    for isa in NARROWER + (_isa.cpu_isa(),):
        result = _run(["-c", code], isa, timeout=120)
        assert result.returncode == 0, result.stderr
        digests.add(result.stdout.strip())
    assert len(digests) == 1
