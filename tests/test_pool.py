"""convkern's max pooling (forward values and indices, backward) against tests/reference.py.

Values and indices must match the reference exactly (a max is an input element); the
backward pass accumulates overlapping windows, so it is compared within tolerance.
The parameter matrix POOL_CASES is shared with test_torch_parity.py.
"""

import itertools
import random

import numpy as np
import pytest
import reference as ref
from conftest import DTYPES, LAYOUTS, assert_close, layout

import convkern

SPATIAL = {1: (13,), 2: (9, 8), 3: (6, 7, 5)}


def _kernels(d):
    return {
        1: [("k2", 2), ("k3", 3), ("k4", (4,))],
        2: [("k2", (2, 2)), ("k32", (3, 2)), ("k3", (3, 3))],
        3: [("k2", (2, 2, 2)), ("k322", (3, 2, 2)), ("k232", (2, 3, 2))],
    }[d]


def _strides(d):
    return [("sNone", None), ("s1", 1), ("s2", 2), ("smix", (3, 2, 1)[:d])]


def _paddings(d):
    return [("p0", 0), ("p1", 1), ("pmix", (1, 0, 1)[:d])]


def _dilations(d):
    return [("dil1", 1), ("dil2", 2), ("dilmix", (2, 1, 1)[:d])]


def _windows_all_nonempty(S, kernel, stride, padding, dilation, ceil_mode):
    """True when every pooling window holds at least one element of the input."""
    d = len(S)
    kernel = ref._tuple(kernel, d)
    stride = kernel if stride is None else ref._tuple(stride, d)
    padding, dilation = ref._tuple(padding, d), ref._tuple(dilation, d)
    for n, k, s, p, dl in zip(S, kernel, stride, padding, dilation):
        o = ref.pool_out_size(n, k, s, p, dl, ceil_mode)
        if o < 1:
            return False
        for i in range(o):
            if not any(0 <= i * s - p + j * dl < n for j in range(k)):
                return False
    return True


def _make_case(d, kern, stride, pad, dil, ceil_mode):
    (kname, k), (sname, s), (pname, p), (dname, dl) = kern, stride, pad, dil
    # Padding is at most half the kernel: shrink it where a kernel axis is 1 wide.
    kt = ref._tuple(k, d)
    pt = tuple(min(pp, kk // 2) for pp, kk in zip(ref._tuple(p, d), kt))
    p = pt if not isinstance(p, int) else (p if all(pp == p for pp in pt) else pt)
    case = dict(d=d, N=2, C=3, S=SPATIAL[d], kernel=k, stride=s, padding=p, dilation=dl,
                ceil_mode=ceil_mode,
                id=f"{d}d-{kname}-{sname}-{pname}-{dname}-{'ceil' if ceil_mode else 'floor'}")
    return case


def _build_cases():
    # The parameters that are not crossed fully are drawn from a fixed-seed generator, so
    # they vary independently of the crossed ones (and the ids are stable).
    pick = random.Random(20240602).choice
    cases = []
    for d in (1, 2, 3):
        # A: every kernel x stride x ceil_mode; padding and dilation drawn.
        for kern, stride, ceil_mode in itertools.product(_kernels(d), _strides(d),
                                                          (False, True)):
            cases.append(_make_case(d, kern, stride, pick(_paddings(d)),
                                    pick(_dilations(d)), ceil_mode))
        # B: every padding x dilation x ceil_mode; kernel and stride drawn.
        for pad, dil, ceil_mode in itertools.product(_paddings(d), _dilations(d),
                                                     (False, True)):
            cases.append(_make_case(d, pick(_kernels(d)), pick(_strides(d)), pad, dil,
                                    ceil_mode))
    # Windows with no input element at all are a PyTorch oddity (it reports -inf and an
    # index outside the plane); they are not part of the matrix.
    return [c for c in cases if _windows_all_nonempty(c["S"], c["kernel"], c["stride"],
                                                       c["padding"], c["dilation"],
                                                       c["ceil_mode"])]


POOL_CASES = _build_cases()
POOL_IDS = [c["id"] for c in POOL_CASES]
DATA = ["random", "ties", "nan_inf"]


def pool_kwargs(case):
    return dict(stride=case["stride"], padding=case["padding"], dilation=case["dilation"],
                ceil_mode=case["ceil_mode"])


def make_pool_input(case, dtype, data, rng, N=None):
    """An input for a case: distinct values, heavy ties, or ties with NaN and +-inf."""
    N = case["N"] if N is None else N
    shape = (N, case["C"]) + case["S"]
    if data == "random":
        x = rng.standard_normal(shape)
    elif data == "ties":
        x = rng.integers(0, 3, shape).astype(np.float64)
    elif data == "nan_inf":
        x = rng.choice(np.array([np.nan, -np.inf, np.inf, 0.0, 1.0, -1.0]), size=shape,
                       p=[0.15, 0.25, 0.05, 0.2, 0.2, 0.15])
    else:
        raise AssertionError(data)
    return x.astype(dtype)


def _assert_pool_equal(y, idx, x, case, dtype):
    ey, ei = ref.maxpool_forward(x, case["kernel"], **pool_kwargs(case))
    assert y.dtype == dtype and y.shape == ey.shape
    assert idx.dtype == np.int64 and idx.shape == ei.shape
    np.testing.assert_array_equal(y, ey.astype(dtype))  # NaN == NaN here
    np.testing.assert_array_equal(idx, ei)


@pytest.mark.parametrize("data", DATA)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", POOL_CASES, ids=POOL_IDS)
def test_forward(case, dtype, data, rng):
    x = make_pool_input(case, dtype, data, rng)
    y, idx = convkern.maxpool_forward(x, case["kernel"], **pool_kwargs(case))
    _assert_pool_equal(y, idx, x, case, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", POOL_CASES, ids=POOL_IDS)
def test_backward(case, dtype, rng):
    d = case["d"]
    x = make_pool_input(case, dtype, "ties", rng)
    y, idx = convkern.maxpool_forward(x, case["kernel"], **pool_kwargs(case))
    gy = rng.standard_normal(y.shape).astype(dtype)
    gx = convkern.maxpool_backward(gy, idx, x.shape)
    assert_close(gx, ref.maxpool_backward(gy, idx, x.shape, d), dtype)


UNBATCHED = POOL_CASES[::4]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", UNBATCHED, ids=[c["id"] for c in UNBATCHED])
def test_unbatched(case, dtype, rng):
    d = case["d"]
    kernel = ref._tuple(case["kernel"], d)  # an int would mean d = x.ndim - 2
    x = make_pool_input(case, dtype, "ties", rng)[0]
    y, idx = convkern.maxpool_forward(x, kernel, **pool_kwargs(case))
    assert y.ndim == x.ndim
    _assert_pool_equal(y, idx, x, dict(case, kernel=kernel), dtype)
    yb, ib = convkern.maxpool_forward(x[None], kernel, **pool_kwargs(case))
    np.testing.assert_array_equal(y, yb[0])
    np.testing.assert_array_equal(idx, ib[0])
    gy = rng.standard_normal(y.shape).astype(dtype)
    # (C, *S) could be a batched input with one spatial axis fewer: say how many there are.
    gx = convkern.maxpool_backward(gy, idx, x.shape, spatial_dims=d)
    assert_close(gx, ref.maxpool_backward(gy, idx, x.shape, d), dtype)


@pytest.mark.parametrize("d", [1, 2, 3])
def test_int_kernel_means_all_spatial_axes(d, rng):
    x = rng.standard_normal((2, 3) + SPATIAL[d])
    y, idx = convkern.maxpool_forward(x, 2)
    y2, idx2 = convkern.maxpool_forward(x, (2,) * d, stride=(2,) * d)
    np.testing.assert_array_equal(y, y2)
    np.testing.assert_array_equal(idx, idx2)
    ey, ei = ref.maxpool_forward(x, 2)
    np.testing.assert_array_equal(y, ey)
    np.testing.assert_array_equal(idx, ei)


def test_ties_take_first_maximum_and_last_nan_wins():
    # One window over the whole row: the first of the tied maxima, and the NaN rule
    # "val > maxval or isnan(val)" that makes the last NaN of a window win.
    x = np.array([[[1.0, 3.0, 2.0, 3.0, 3.0]]])
    y, idx = convkern.maxpool_forward(x, 5)
    assert y[0, 0, 0] == 3.0 and idx[0, 0, 0] == 1
    x = np.array([[[1.0, np.nan, 3.0, np.nan, 2.0]]])
    y, idx = convkern.maxpool_forward(x, 5)
    assert np.isnan(y[0, 0, 0]) and idx[0, 0, 0] == 3
    # All -inf: the value is -inf and the index the window's first in-bounds element.
    x = np.full((1, 1, 6), -np.inf)
    y, idx = convkern.maxpool_forward(x, 3, stride=2, padding=1)
    np.testing.assert_array_equal(y, -np.inf)
    np.testing.assert_array_equal(idx, [[[0, 1, 3]]])


# Edge geometries outside the matrix: (id, x shape, kernel, kwargs).
EDGES = [
    ("kernel-one", (2, 3, 5, 4), 1, {}),
    ("kernel-equals-input", (2, 3, 5, 4), (5, 4), {}),
    ("size-one-input", (2, 3, 1, 1, 1), 1, {}),
    ("stride-beyond-kernel", (2, 3, 11), 2, dict(stride=4)),
    ("ceil-keeps-last", (1, 2, 5), 2, dict(stride=2, ceil_mode=True)),
    ("ceil-drops-window-in-padding", (1, 2, 5), 2, dict(stride=2, padding=1, ceil_mode=True)),
    ("ceil-3d", (1, 2, 5, 6, 7), (2, 3, 2), dict(stride=(2, 2, 3), padding=(1, 1, 0),
                                                 ceil_mode=True)),
    ("ceil-dilated", (2, 2, 10, 9), (3, 2), dict(stride=3, dilation=(2, 3), padding=1,
                                                ceil_mode=True)),
    ("long-1d", (2, 3, 1000), 7, dict(stride=3, padding=3, dilation=2)),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("edge", EDGES, ids=[e[0] for e in EDGES])
def test_edge_geometries(edge, dtype, rng):
    _, x_shape, kernel, kw = edge
    d = len(x_shape) - 2
    x = rng.integers(0, 4, x_shape).astype(dtype)
    y, idx = convkern.maxpool_forward(x, kernel, **kw)
    ey, ei = ref.maxpool_forward(x, kernel, **kw)
    np.testing.assert_array_equal(y, ey.astype(dtype))
    np.testing.assert_array_equal(idx, ei)
    g = rng.standard_normal(y.shape).astype(dtype)
    assert_close(convkern.maxpool_backward(g, idx, x.shape),
                 ref.maxpool_backward(g, idx, x.shape, d), dtype)


def test_kernel_one_is_identity(rng):
    x = rng.standard_normal((2, 3, 4, 5))
    y, idx = convkern.maxpool_forward(x, 1)
    np.testing.assert_array_equal(y, x)
    np.testing.assert_array_equal(idx, np.broadcast_to(np.arange(20).reshape(4, 5), x.shape))


def test_ceil_mode_output_sizes():
    # 5 samples, kernel 2, stride 2: floor gives 2 windows, ceil 3 (the last one partial);
    # with padding 1 ceil would start a 4th window in the right padding, so it is dropped.
    x = np.arange(5.0).reshape(1, 1, 5)
    assert convkern.maxpool_forward(x, 2)[0].shape[-1] == 2
    assert convkern.maxpool_forward(x, 2, ceil_mode=True)[0].shape[-1] == 3
    y, idx = convkern.maxpool_forward(x, 2, padding=1, ceil_mode=True)
    np.testing.assert_array_equal(y, [[[0.0, 2.0, 4.0]]])
    np.testing.assert_array_equal(idx, [[[0, 2, 4]]])


# --------------------------------------------------------------------------------------
# Layouts, read-only inputs, no mutation, determinism, empty batch
# --------------------------------------------------------------------------------------

LAYOUT_CASES = POOL_CASES[::8]


@pytest.mark.parametrize("kind", LAYOUTS)
@pytest.mark.parametrize("case", LAYOUT_CASES, ids=[c["id"] for c in LAYOUT_CASES])
def test_layouts_give_same_bits(case, kind, rng):
    dtype = DTYPES[POOL_CASES.index(case) % 2]
    x = make_pool_input(case, dtype, "nan_inf", rng)
    y, idx = convkern.maxpool_forward(x, case["kernel"], **pool_kwargs(case))
    gy = rng.standard_normal(y.shape).astype(dtype)
    gx = convkern.maxpool_backward(gy, idx, x.shape)

    lx, lgy, lidx = layout(x, kind), layout(gy, kind), layout(idx, kind)
    snaps = [(a.copy(), a.flags.writeable) for a in (lx, lgy, lidx)]
    ly, lix = convkern.maxpool_forward(lx, case["kernel"], **pool_kwargs(case))
    np.testing.assert_array_equal(ly, y)
    np.testing.assert_array_equal(lix, idx)
    np.testing.assert_array_equal(convkern.maxpool_backward(lgy, lidx, x.shape), gx)
    for a, (copy, writeable) in zip((lx, lgy, lidx), snaps):
        np.testing.assert_array_equal(a, copy, err_msg="an input was modified")
        assert a.flags.writeable == writeable


@pytest.mark.parametrize("case", POOL_CASES[::6], ids=POOL_IDS[::6])
def test_inputs_never_modified(case, rng):
    x = make_pool_input(case, np.float64, "random", rng)
    x0 = x.copy()
    y, idx = convkern.maxpool_forward(x, case["kernel"], **pool_kwargs(case))
    np.testing.assert_array_equal(x, x0)
    gy = rng.standard_normal(y.shape)
    gy0, idx0 = gy.copy(), idx.copy()
    convkern.maxpool_backward(gy, idx, x.shape)
    np.testing.assert_array_equal(gy, gy0)
    np.testing.assert_array_equal(idx, idx0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("d", [1, 2, 3])
def test_repeated_calls_same_bits(d, dtype, rng):
    S = {1: (501,), 2: (40, 37), 3: (12, 11, 10)}[d]
    x = rng.integers(0, 5, (4, 16) + S).astype(dtype)  # many ties
    kw = dict(stride=1, padding=1, dilation=1, ceil_mode=True)
    y0, i0 = convkern.maxpool_forward(x, 3, **kw)
    gy = rng.standard_normal(y0.shape).astype(dtype)
    gx0 = convkern.maxpool_backward(gy, i0, x.shape)
    for _ in range(3):
        y, i = convkern.maxpool_forward(x, 3, **kw)
        np.testing.assert_array_equal(y, y0)
        np.testing.assert_array_equal(i, i0)
        np.testing.assert_array_equal(convkern.maxpool_backward(gy, i0, x.shape), gx0)
    ey, ei = ref.maxpool_forward(x, 3, **kw)
    np.testing.assert_array_equal(y0, ey.astype(dtype))
    np.testing.assert_array_equal(i0, ei)
    assert_close(gx0, ref.maxpool_backward(gy, i0, x.shape, d), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("d", [1, 2, 3])
def test_empty_batch(d, dtype, rng):
    case = next(c for c in POOL_CASES if c["d"] == d)
    x = make_pool_input(case, dtype, "random", rng, N=0)
    y, idx = convkern.maxpool_forward(x, case["kernel"], **pool_kwargs(case))
    ey, ei = ref.maxpool_forward(make_pool_input(case, dtype, "random", rng, N=1),
                                 case["kernel"], **pool_kwargs(case))
    assert y.shape == (0,) + ey.shape[1:] and y.dtype == dtype
    assert idx.shape == y.shape and idx.dtype == np.int64
    gx = convkern.maxpool_backward(y.copy(), idx, x.shape)
    assert gx.shape == x.shape and gx.dtype == dtype


# Small planes of 2x2 (2x2x2, 1x2x2) windows as many apart, no padding: rows of fewer
# windows than a vector, which _pool.pyx copies chunk by chunk into runs of tap rows so
# that vectors of windows run across rows and planes (pool_pairs).  One window per row
# takes that path on every vector ISA; 1 to 7 windows per row on the wider ones.  Odd
# sizes leave rows and columns no window reads (floor mode); 3 and 70 planes put vectors
# across plane and chunk boundaries, and the batch of 33 x 64 leaves a ragged last chunk.
PAIRS = [
    ((1, 1, 2, 2), 2),
    ((3, 1, 2, 2), 2),
    ((2, 35, 4, 4), 2),
    ((1, 70, 5, 3), 2),
    ((4, 9, 8, 8), 2),
    ((2, 5, 14, 6), (2, 2)),
    ((1, 3, 7, 15), 2),
    ((33, 64, 2, 2), 2),
    ((2, 6, 4, 4, 4), 2),
    ((1, 5, 3, 6, 2), (1, 2, 2)),
    ((2, 3, 5, 5, 7), (2, 2, 2)),
]


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("data", DATA)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape, kernel", PAIRS, ids=[str(p[0]) for p in PAIRS])
def test_small_planes_of_pairs(shape, kernel, dtype, data, threads, rng, monkeypatch):
    case = {"N": shape[0], "C": shape[1], "S": shape[2:]}
    x = make_pool_input(case, dtype, data, rng)
    # every call on all the threads it is given (small calls would run on one)
    monkeypatch.setattr("convkern.pool_plans.threads_for", lambda work, grain: threads)
    try:
        y, idx = convkern.maxpool_forward(x, kernel)
    finally:
        monkeypatch.undo()
    ey, ei = ref.maxpool_forward(x, kernel)
    np.testing.assert_array_equal(y, ey.astype(dtype))  # NaN == NaN here
    np.testing.assert_array_equal(idx, ei)
    g = rng.standard_normal(y.shape).astype(dtype)
    assert_close(convkern.maxpool_backward(g, idx, x.shape),
                 ref.maxpool_backward(g, idx, x.shape, len(shape) - 2), dtype)
