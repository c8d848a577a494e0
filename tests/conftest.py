"""Shared test configuration: tolerances (stated once, here), layouts, fixtures.

Tolerances
----------
convkern computes in the input's dtype; the reference (tests/reference.py) computes in
float64 from the same input values. An element passes when

    |actual - expected| <= TOLERANCE[dtype] * (max|expected| + |expected|)

i.e. the error is measured relative to the magnitude of the whole output (sums of many
terms cancel, so a per-element relative test would be meaningless near zero) plus an
element-wise relative part. NaN must appear at exactly the same positions.

- float64: 1e-10 (a 1000-term sum in float64 loses about 1e-13 relative).
- float32: 1e-4 (float32 epsilon is 1.2e-7; sums of a few thousand terms in any order
  stay well inside 1e-4 of the output's magnitude).

Finite differences (test_gradients.py) are float64 and their own approximation error is
larger than a kernel's rounding, so they use FD_TOLERANCE = 1e-7 instead. The functions
differentiated are linear (conv) or piecewise linear with well-separated values (max
pool), so central differences have no truncation error and only rounding error of about
eps * |loss| / h with h = 1e-3, i.e. around 1e-11 relative.

Comparisons that must be exact (max-pool values and indices, repeated calls, layout
variants against contiguous copies) use ``np.testing.assert_array_equal`` instead.
"""

import importlib
import os
import sys

import numpy as np
import pytest

# Make tests/reference.py importable whatever pytest's import mode.
_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

TOLERANCE = {
    np.dtype(np.float32): 1e-4,
    np.dtype(np.float64): 1e-10,
}

# Finite-difference checks (float64 only), relative to max|expected| as above.
FD_TOLERANCE = 1e-7

DTYPES = [np.float32, np.float64]

# Layout variants that must give bit-identical results to a C-contiguous copy.
LAYOUTS = ["fortran", "strided", "negative", "readonly"]


def assert_close(actual, expected, dtype, err_msg="", tol=None):
    """Assert actual (dtype ``dtype``) equals the float64 ``expected`` within TOLERANCE.

    ``tol`` overrides TOLERANCE[dtype]; it is only ever FD_TOLERANCE.

    Also checks that ``actual`` is an ndarray of exactly ``dtype`` and the same shape.
    """
    dtype = np.dtype(dtype)
    assert isinstance(actual, np.ndarray), type(actual)
    assert actual.dtype == dtype, f"dtype {actual.dtype} != {dtype} {err_msg}"
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, f"shape {actual.shape} != {expected.shape} {err_msg}"
    a = actual.astype(np.float64)
    nan_a, nan_e = np.isnan(a), np.isnan(expected)
    np.testing.assert_array_equal(nan_a, nan_e, err_msg=f"NaN positions differ {err_msg}")
    finite = np.isfinite(expected)
    # Infinities must match exactly.
    np.testing.assert_array_equal(a[~finite & ~nan_e], expected[~finite & ~nan_e])
    if not finite.any():
        return
    tol = TOLERANCE[dtype] if tol is None else tol
    scale = float(np.max(np.abs(expected[finite]))) if expected.size else 0.0
    err = np.abs(a[finite] - expected[finite])
    bound = tol * (scale + np.abs(expected[finite]))  # all-zero expected: exact
    bad = err > bound
    if bad.any():
        worst = int(np.argmax(err - bound))
        raise AssertionError(
            f"{int(bad.sum())} of {err.size} elements outside tolerance "
            f"(dtype {dtype}, tol {tol:g} x max|expected| {scale:.3g}); "
            f"max abs error {err.max():.3g}, max rel-to-max {err.max() / max(scale, 1e-300):.3g}; "
            f"worst element expected {expected[finite][worst]!r} got {a[finite][worst]!r} "
            f"{err_msg}"
        )


def layout(a, kind):
    """Return an array equal to ``a`` (values and shape) with the given memory layout.

    - 'fortran': Fortran order (not C-contiguous for ndim >= 2).
    - 'strided': a view with every axis strided by 2 into a larger buffer.
    - 'negative': a view with negative strides on every axis.
    - 'readonly': C-contiguous but not writeable.
    """
    a = np.asarray(a)
    if kind == "fortran":
        out = np.asfortranarray(a)
    elif kind == "strided":
        fill = np.nan if a.dtype.kind == "f" else -1  # poison the gaps
        big = np.full(tuple(2 * s + 1 for s in a.shape), fill, dtype=a.dtype)
        out = big[tuple(slice(1, None, 2) for _ in a.shape)]
        out[...] = a
    elif kind == "negative":
        flipped = np.ascontiguousarray(a[tuple(slice(None, None, -1) for _ in a.shape)])
        out = flipped[tuple(slice(None, None, -1) for _ in a.shape)]
    elif kind == "readonly":
        out = np.array(a, copy=True)
        out.flags.writeable = False
    else:
        raise AssertionError(kind)
    np.testing.assert_array_equal(out, a)
    return out


@pytest.fixture
def rng(request):
    """A NumPy Generator seeded from the test's node id (stable across runs)."""
    seed = sum(ord(ch) * (i + 1) for i, ch in enumerate(request.node.nodeid)) % (2**32)
    return np.random.default_rng(seed)


@pytest.fixture(scope="session")
def torch():
    """The torch module, or a clean skip when it is not importable."""
    return pytest.importorskip("torch")


def pytest_configure(config):
    config.addinivalue_line("markers", "torch: compares against PyTorch (skipped without torch)")
    # CI sets CONVKERN_REQUIRE_TORCH=1: there the PyTorch parity tests must run, not skip.
    if os.environ.get("CONVKERN_REQUIRE_TORCH", "") not in ("", "0"):
        try:
            import torch  # noqa: F401
        except ImportError as exc:
            raise pytest.UsageError(
                f"CONVKERN_REQUIRE_TORCH is set but torch is not importable: {exc}"
            ) from exc


def import_extra(module, extra):
    """Import the optional dependency ``module`` of the ``extra`` extra, or skip the test
    module with the install command.  CI sets CONVKERN_REQUIRE_EXTRAS=1 (``.ci/run``
    installs the extras): there a missing extra fails instead of skipping."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        reason = f'{module} is not installed (pip install -e ".[{extra}]"): {exc}'
        if os.environ.get("CONVKERN_REQUIRE_EXTRAS", "") not in ("", "0"):
            pytest.fail(f"CONVKERN_REQUIRE_EXTRAS is set but {reason}", pytrace=False)
        pytest.skip(reason, allow_module_level=True)
