"""convkern's convolution (forward and the three gradients) against tests/reference.py.

The parameter matrix CONV_CASES is shared with test_torch_parity.py.
"""

import itertools
import os
import random
import subprocess
import sys

import numpy as np
import pytest
import reference as ref
from conftest import DTYPES, LAYOUTS, assert_close, layout

import convkern

# --------------------------------------------------------------------------------------
# The matrix
# --------------------------------------------------------------------------------------

# Per d: input spatial size (odd sizes so strides 2 and 3 do not divide the padded input)
# and kernel size (non-square).
SPATIAL = {1: (11,), 2: (9, 7), 3: (7, 6, 5)}
KERNEL = {1: (3,), 2: (3, 2), 3: (2, 3, 2)}
C_IN = 6


def _paddings(d):
    return [
        ("int0", 0),
        ("int2", 2),
        ("tuple", (1, 0, 2)[:d]),
        ("pairs", ((0, 2), (1, 0), (2, 1))[:d]),
        ("valid", "valid"),
        ("same", "same"),
        ("full", "full"),
    ]


def _strides(d):
    return [("s1", 1), ("s2", 2), ("s3", 3), ("smix", (2, 1, 3)[:d])]


def _dilations(d):
    return [("dil1", 1), ("dil2", 2), ("dilmix", (1, 2, 1)[:d])]


# groups -> (groups, F). "dw" is depthwise (groups == C) with channel multiplier 2.
GROUPS = [("g1", 1, 4), ("g2", 2, 4), ("g3", 3, 6), ("dw", C_IN, 2 * C_IN)]
BIASES = ["nobias", "tied", "untied"]


def _make_case(d, pad, stride, dil, grp, bias, N=2):
    (pname, padding), (sname, s), (dname, dl), (gname, groups, F) = pad, stride, dil, grp
    case = dict(d=d, N=N, C=C_IN, F=F, S=SPATIAL[d], K=KERNEL[d], stride=s, padding=padding,
                dilation=dl, groups=groups, bias=bias)
    case["id"] = f"{d}d-{pname}-{sname}-{dname}-{gname}-{bias}"
    # Every case must have a valid output; the reference asserts O >= 1.
    ref.conv_output_spatial((N, C_IN) + SPATIAL[d], (F, C_IN // groups) + KERNEL[d],
                            s, padding, dl)
    return case


def _build_cases():
    # The parameters that are not crossed fully are drawn from a fixed-seed generator, so
    # they vary independently of the crossed ones (and the ids are stable).
    pick = random.Random(20240601).choice
    cases = []
    for d in (1, 2, 3):
        # A: every padding form x every stride; dilation, groups and bias drawn.
        for pad, stride in itertools.product(_paddings(d), _strides(d)):
            cases.append(_make_case(d, pad, stride, pick(_dilations(d)), pick(GROUPS),
                                    pick(BIASES)))
        # B: every groups x bias x dilation; padding and stride drawn.
        for grp, bias, dil in itertools.product(GROUPS, BIASES, _dilations(d)[:2]):
            cases.append(_make_case(d, pick(_paddings(d)), pick(_strides(d)), dil, grp,
                                    bias))
    return cases


CONV_CASES = _build_cases()
CONV_IDS = [c["id"] for c in CONV_CASES]


def conv_kwargs(case):
    return dict(stride=case["stride"], padding=case["padding"], dilation=case["dilation"],
                groups=case["groups"])


def make_conv_inputs(case, dtype, rng, unbatched=False, N=None):
    """Random x, weight, bias (or None) and grad_y for a case, all of ``dtype``."""
    N = case["N"] if N is None else N
    x_shape = (N, case["C"]) + case["S"]
    w_shape = (case["F"], case["C"] // case["groups"]) + case["K"]
    out = ref.conv_output_spatial(x_shape, w_shape, case["stride"], case["padding"],
                                  case["dilation"])
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    if case["bias"] == "tied":
        b = rng.standard_normal((case["F"],)).astype(dtype)
    elif case["bias"] == "untied":
        b = rng.standard_normal((case["F"],) + out).astype(dtype)
    else:
        b = None
    gy = rng.standard_normal((N, case["F"]) + out).astype(dtype)
    if unbatched:
        x, gy = x[0], gy[0]
    return x, w, b, gy


# --------------------------------------------------------------------------------------
# Forward and gradients against the reference
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CONV_CASES, ids=CONV_IDS)
def test_forward(case, dtype, rng):
    x, w, b, _ = make_conv_inputs(case, dtype, rng)
    y = convkern.conv_forward(x, w, b, **conv_kwargs(case))
    assert_close(y, ref.conv_forward(x, w, b, **conv_kwargs(case)), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CONV_CASES, ids=CONV_IDS)
def test_backward_input(case, dtype, rng):
    x, w, _, gy = make_conv_inputs(case, dtype, rng)
    gx = convkern.conv_backward_input(gy, w, x.shape, **conv_kwargs(case))
    assert_close(gx, ref.conv_backward_input(gy, w, x.shape, **conv_kwargs(case)), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CONV_CASES, ids=CONV_IDS)
def test_backward_weight(case, dtype, rng):
    x, w, _, gy = make_conv_inputs(case, dtype, rng)
    gw = convkern.conv_backward_weight(x, gy, w.shape, **conv_kwargs(case))
    assert_close(gw, ref.conv_backward_weight(x, gy, w.shape, **conv_kwargs(case)), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("untied", [False, True])
@pytest.mark.parametrize("d", [1, 2, 3])
def test_backward_bias(d, untied, dtype, rng):
    out = (5, 4, 3)[:d]
    gy = rng.standard_normal((3, 7) + out).astype(dtype)
    gb = convkern.conv_backward_bias(gy, untied=untied)
    expected = ref.conv_backward_bias(gy, untied=untied)
    assert gb.shape == ((7,) + out if untied else (7,))
    assert_close(gb, expected, dtype)


# Unbatched (C, *S) inputs: a slice of the matrix, all three functions.
UNBATCHED = CONV_CASES[::5]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", UNBATCHED, ids=[c["id"] for c in UNBATCHED])
def test_unbatched(case, dtype, rng):
    x, w, b, gy = make_conv_inputs(case, dtype, rng, unbatched=True)
    kw = conv_kwargs(case)
    y = convkern.conv_forward(x, w, b, **kw)
    assert y.ndim == x.ndim
    assert_close(y, ref.conv_forward(x, w, b, **kw), dtype)
    # The unbatched result equals the batched one with N = 1.
    np.testing.assert_array_equal(y, convkern.conv_forward(x[None], w, b, **kw)[0])
    gx = convkern.conv_backward_input(gy, w, x.shape, **kw)
    assert_close(gx, ref.conv_backward_input(gy, w, x.shape, **kw), dtype)
    gw = convkern.conv_backward_weight(x, gy, w.shape, **kw)
    assert_close(gw, ref.conv_backward_weight(x, gy, w.shape, **kw), dtype)


# Edge geometries outside the matrix: (id, x shape, weight shape, kwargs).
EDGES = [
    ("kernel-equals-input", (2, 3, 5, 4), (2, 3, 5, 4), {}),
    ("kernel-equals-padded-input", (2, 3, 3), (2, 3, 5), dict(padding=1)),
    ("size-one-input", (2, 3, 1, 1, 1), (4, 3, 1, 1, 1), {}),
    ("stride-beyond-input", (2, 3, 6, 6), (4, 3, 1, 1), dict(stride=10)),
    ("padding-wider-than-kernel", (1, 2, 4), (3, 2, 3), dict(padding=4)),
    ("all-after-padding", (2, 2, 5, 5), (3, 2, 2, 2), dict(padding=((0, 3), (0, 0)))),
    ("all-before-padding", (2, 2, 5, 5), (3, 2, 2, 2), dict(padding=((0, 0), (3, 0)))),
    ("same-even-size-stride2", (2, 3, 8, 8), (4, 3, 4, 3), dict(padding="same", stride=2)),
    ("same-dilated", (2, 3, 7, 10), (4, 3, 3, 2), dict(padding="same", dilation=(3, 4))),
    ("full-strided", (2, 3, 9), (4, 3, 4), dict(padding="full", stride=3, dilation=2)),
    ("pure-depthwise", (2, 5, 7, 6), (5, 1, 3, 3), dict(groups=5, padding=1)),
    ("single-channel", (3, 1, 9, 9), (1, 1, 3, 3), {}),
    ("many-channels", (2, 64, 5, 5), (8, 64, 3, 3), dict(padding=1)),
    ("many-filters-grouped", (2, 8, 6, 6), (64, 2, 2, 2), dict(groups=4)),
    ("long-1d", (2, 3, 1000), (4, 3, 9), dict(stride=7, dilation=3, padding=((5, 0),))),
    ("kernel-one-3d", (2, 4, 3, 4, 5), (6, 2, 1, 1, 1), dict(groups=2, stride=(2, 1, 3))),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("edge", EDGES, ids=[e[0] for e in EDGES])
def test_edge_geometries(edge, dtype, rng):
    _, x_shape, w_shape, kw = edge
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    out = ref.conv_output_spatial(x_shape, w_shape, **kw)
    b = rng.standard_normal((w_shape[0],) + out).astype(dtype)
    y = convkern.conv_forward(x, w, b, **kw)
    assert_close(y, ref.conv_forward(x, w, b, **kw), dtype)
    g = rng.standard_normal(y.shape).astype(dtype)
    assert_close(convkern.conv_backward_input(g, w, x.shape, **kw),
                 ref.conv_backward_input(g, w, x.shape, **kw), dtype)
    assert_close(convkern.conv_backward_weight(x, g, w.shape, **kw),
                 ref.conv_backward_weight(x, g, w.shape, **kw), dtype)
    assert_close(convkern.conv_backward_bias(g, untied=True), ref.conv_backward_bias(g, untied=True),
                 dtype)


# Output widths that are one micro-kernel vector or whole slivers on some ISA (4, 8, 16
# wide vectors; 12, 16, 32 wide slivers) take the vector-row tiles of the direct path.
ROW_WIDTHS = [4, 8, 12, 16, 24, 32, 48, 64]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("planes", [0, 3])
@pytest.mark.parametrize("rows", [1, 2, 5, 16])
@pytest.mark.parametrize("ow", ROW_WIDTHS)
@pytest.mark.parametrize("stride", [1, 2])
def test_output_rows_of_whole_vectors(ow, rows, planes, stride, dtype, rng):
    """2-D outputs (planes = 0) and 3-D outputs of several planes, which whole-plane
    vector-row tiles cover together."""
    out = ((planes,) if planes else ()) + (rows, ow)
    kw = dict(stride=stride, padding=1)
    x = rng.standard_normal((2, 3) + tuple((o - 1) * stride + 1 for o in out)).astype(dtype)
    w = rng.standard_normal((5, 3) + (3,) * len(out)).astype(dtype)
    b = rng.standard_normal(5).astype(dtype)
    y = convkern.conv_forward(x, w, b, **kw)
    assert y.shape[2:] == out
    assert_close(y, ref.conv_forward(x, w, b, **kw), dtype)
    g = rng.standard_normal(y.shape).astype(dtype)
    assert_close(convkern.conv_backward_input(g, w, x.shape, **kw),
                 ref.conv_backward_input(g, w, x.shape, **kw), dtype)


# Strided input gradients with enough channels per group run phase by phase (one
# stride-1 correlation per stride phase, scattered back); few channels take col2im.
PHASE_CASES = [
    (1, (37,), (3,), 2, 1, 1),
    (1, (40,), (5,), 3, 2, ((3, 1),)),
    (2, (13, 11), (3, 3), 2, 1, 1),
    (2, (14, 9), (4, 3), (2, 3), (1, 2), ((2, 0), (1, 3))),
    (2, (12, 12), (2, 2), 2, 1, 0),
    (3, (7, 8, 6), (3, 2, 3), (2, 2, 1), 1, 1),
    (1, (2,), (3,), 3, 1, ((1, 0),)),  # an input shorter than the stride: phase 0 is empty
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("groups", [1, 2])
@pytest.mark.parametrize("case", PHASE_CASES, ids=[f"{c[0]}d-{i}" for i, c in enumerate(PHASE_CASES)])
def test_strided_input_gradient_by_phases(case, groups, dtype, rng):
    d, spatial, kernel, stride, dilation, padding = case
    kw = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    x_shape = (2, 40) + spatial
    w = rng.standard_normal((6, 40 // groups) + kernel).astype(dtype)
    out = ref.conv_output_spatial(x_shape, w.shape, **kw)
    g = rng.standard_normal((2, 6) + out).astype(dtype)
    assert_close(convkern.conv_backward_input(g, w, x_shape, **kw),
                 ref.conv_backward_input(g, w, x_shape, **kw), dtype)


# --------------------------------------------------------------------------------------
# Layouts, read-only inputs, no mutation, determinism, empty batch
# --------------------------------------------------------------------------------------

LAYOUT_CASES = CONV_CASES[::9]


def _snapshot(arrays):
    return [None if a is None else (a.copy(), a.flags.writeable) for a in arrays]


def _assert_unchanged(arrays, snap):
    for a, s in zip(arrays, snap):
        if a is None:
            continue
        np.testing.assert_array_equal(a, s[0], err_msg="an input was modified")
        assert a.flags.writeable == s[1]


@pytest.mark.parametrize("kind", LAYOUTS)
@pytest.mark.parametrize("case", LAYOUT_CASES, ids=[c["id"] for c in LAYOUT_CASES])
def test_layouts_give_same_bits(case, kind, rng):
    dtype = DTYPES[CONV_CASES.index(case) % 2]
    x, w, b, gy = make_conv_inputs(case, dtype, rng)
    kw = conv_kwargs(case)
    expect_y = convkern.conv_forward(x, w, b, **kw)
    expect_gx = convkern.conv_backward_input(gy, w, x.shape, **kw)
    expect_gw = convkern.conv_backward_weight(x, gy, w.shape, **kw)
    expect_gb = convkern.conv_backward_bias(gy, untied=case["bias"] == "untied")

    lx, lw, lgy = layout(x, kind), layout(w, kind), layout(gy, kind)
    lb = None if b is None else layout(b, kind)
    args = [lx, lw, lb, lgy]
    snap = _snapshot(args)
    np.testing.assert_array_equal(convkern.conv_forward(lx, lw, lb, **kw), expect_y)
    np.testing.assert_array_equal(convkern.conv_backward_input(lgy, lw, x.shape, **kw),
                                  expect_gx)
    np.testing.assert_array_equal(convkern.conv_backward_weight(lx, lgy, w.shape, **kw),
                                  expect_gw)
    np.testing.assert_array_equal(
        convkern.conv_backward_bias(lgy, untied=case["bias"] == "untied"), expect_gb)
    _assert_unchanged(args, snap)


@pytest.mark.parametrize("case", CONV_CASES[::7], ids=CONV_IDS[::7])
def test_inputs_never_modified(case, rng):
    x, w, b, gy = make_conv_inputs(case, np.float64, rng)
    args = [x, w, b, gy]
    snap = _snapshot(args)
    kw = conv_kwargs(case)
    convkern.conv_forward(x, w, b, **kw)
    convkern.conv_backward_input(gy, w, x.shape, **kw)
    convkern.conv_backward_weight(x, gy, w.shape, **kw)
    convkern.conv_backward_bias(gy, untied=True)
    convkern.conv_backward_bias(gy, untied=False)
    _assert_unchanged(args, snap)


def test_output_does_not_alias_input(rng):
    # A 1x1 convolution with identity weights must still return a fresh array.
    x = rng.standard_normal((2, 3, 5, 5))
    w = np.eye(3).reshape(3, 3, 1, 1)
    y = convkern.conv_forward(x, w)
    np.testing.assert_array_equal(y, x)
    assert not np.shares_memory(y, x)
    y[...] = 0
    assert np.abs(x).sum() > 0


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("d", [1, 2, 3])
def test_repeated_calls_same_bits(d, dtype, rng):
    # Shapes big enough for the threaded / blocked paths.
    S = {1: (301,), 2: (33, 29), 3: (11, 10, 9)}[d]
    K = {1: (5,), 2: (3, 3), 3: (3, 3, 3)}[d]
    x = rng.standard_normal((4, 16) + S).astype(dtype)
    w = rng.standard_normal((24, 8) + K).astype(dtype)
    b = rng.standard_normal(24).astype(dtype)
    kw = dict(stride=1, padding=1, dilation=1, groups=2)
    y0 = convkern.conv_forward(x, w, b, **kw)
    gy = rng.standard_normal(y0.shape).astype(dtype)
    gx0 = convkern.conv_backward_input(gy, w, x.shape, **kw)
    gw0 = convkern.conv_backward_weight(x, gy, w.shape, **kw)
    gb0 = convkern.conv_backward_bias(gy)
    for _ in range(3):
        np.testing.assert_array_equal(convkern.conv_forward(x, w, b, **kw), y0)
        np.testing.assert_array_equal(convkern.conv_backward_input(gy, w, x.shape, **kw), gx0)
        np.testing.assert_array_equal(convkern.conv_backward_weight(x, gy, w.shape, **kw), gw0)
        np.testing.assert_array_equal(convkern.conv_backward_bias(gy), gb0)
    assert_close(y0, ref.conv_forward(x, w, b, **kw), dtype)
    assert_close(gx0, ref.conv_backward_input(gy, w, x.shape, **kw), dtype)
    assert_close(gw0, ref.conv_backward_weight(x, gy, w.shape, **kw), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("d", [1, 2, 3])
def test_empty_batch(d, dtype, rng):
    case = next(c for c in CONV_CASES if c["d"] == d and c["bias"] == "untied")
    x, w, b, gy = make_conv_inputs(case, dtype, rng, N=0)
    kw = conv_kwargs(case)
    y = convkern.conv_forward(x, w, b, **kw)
    assert y.dtype == dtype and y.shape == gy.shape and y.size == 0
    gx = convkern.conv_backward_input(gy, w, x.shape, **kw)
    assert gx.dtype == dtype and gx.shape == x.shape
    # Sums over an empty batch are zero.
    gw = convkern.conv_backward_weight(x, gy, w.shape, **kw)
    assert gw.dtype == dtype and gw.shape == w.shape
    np.testing.assert_array_equal(gw, 0)
    for untied in (False, True):
        gb = convkern.conv_backward_bias(gy, untied=untied)
        assert gb.dtype == dtype
        assert gb.shape == ((case["F"],) + gy.shape[2:] if untied else (case["F"],))
        np.testing.assert_array_equal(gb, 0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_nan_and_inf_propagate(dtype, rng):
    x = rng.standard_normal((2, 3, 8, 8)).astype(dtype)
    w = rng.standard_normal((4, 3, 3, 3)).astype(dtype)
    x[0, 1, 2, 5] = np.nan
    x[1, 2, 6, 0] = np.inf
    y = convkern.conv_forward(x, w, padding=1)
    expected = ref.conv_forward(x, w, padding=1)
    assert np.isnan(expected).any() and np.isinf(expected).any()
    assert_close(y, expected, dtype)


def test_thread_count_does_not_change_results(rng):
    x = rng.standard_normal((4, 8, 20, 20))
    w = rng.standard_normal((16, 4, 3, 3))
    kw = dict(padding="same", stride=(1, 2), groups=2)
    default = convkern.get_num_threads()
    results = {}
    try:
        for n in (1, 2, 3):
            convkern.set_num_threads(n)
            if convkern._openmp.openmp_enabled():
                assert convkern.get_num_threads() == n
            y = convkern.conv_forward(x, w, **kw)
            g = np.cos(y)
            results[n] = (y, convkern.conv_backward_input(g, w, x.shape, **kw),
                          convkern.conv_backward_weight(x, g, w.shape, **kw),
                          convkern.conv_backward_bias(g))
    finally:
        convkern.set_num_threads(None)  # back to OpenMP's default
    assert convkern.get_num_threads() == default
    y, gx, gw, gb = results[1]
    g = np.cos(y)
    assert_close(y, ref.conv_forward(x, w, **kw), np.float64)
    assert_close(gx, ref.conv_backward_input(g, w, x.shape, **kw), np.float64)
    assert_close(gw, ref.conv_backward_weight(x, g, w.shape, **kw), np.float64)
    assert_close(gb, ref.conv_backward_bias(g), np.float64)
    for n in (2, 3):
        for a, b in zip(results[n], results[1]):
            assert_close(a, b, np.float64)
        # Documented: the weight gradient sums the batch in a fixed order.
        np.testing.assert_array_equal(results[n][2], gw)


@pytest.mark.parametrize("n", ["1", "2"])
def test_omp_num_threads_is_respected(n):
    code = ("import convkern; print(convkern.get_num_threads(), "
            "convkern._openmp.openmp_enabled())")
    env = dict(os.environ, OMP_NUM_THREADS=n)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, timeout=120, check=True).stdout.split()
    threads, enabled = int(out[0]), out[1] == "True"
    assert threads == (int(n) if enabled else 1)
