"""Hypothesis property tests: random valid configurations match the float64 reference,
random invalid ones raise TypeError or ValueError.

Valid configurations cover d in 1-3, strides, every padding form (int, d-tuple,
(before, after) pairs, 'valid', 'same', 'full'), dilation, groups (depthwise included),
no/tied/untied bias, float32/float64, unbatched inputs, batch 0, parameters spelled as
int, tuple, list or NumPy integer, and every memory layout of conftest.LAYOUTS for every
array argument.  Tolerances are conftest's (TOLERANCE, by dtype); max-pool values and
indices must be exact.

Invalid configurations start from a valid one and break exactly one thing (a value, a
kind, a shape, a dtype, an ``out=`` array, a forged index) so the call must be refused;
no refusal may be anything but TypeError or ValueError.
"""

import numpy as np
import pytest
import reference as ref
from conftest import LAYOUTS, assert_close, layout
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import convkern as ck

SETTINGS = dict(deadline=None, max_examples=150,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                       HealthCheck.data_too_large])
FEWER = dict(SETTINGS, max_examples=80)

ALL_LAYOUTS = ["c"] + LAYOUTS


def _arr(rng, shape, dtype, kind):
    a = rng.standard_normal(shape).astype(dtype)
    return a if kind == "c" else layout(a, kind)


def _spell(draw, values):
    """An int-or-tuple parameter in one of its accepted spellings."""
    values = tuple(values)
    if len(set(values)) == 1:
        how = draw(st.sampled_from(["int", "tuple", "list", "npint"]))
        if how == "int":
            return values[0]
        if how == "npint":
            return np.int64(values[0])
    else:
        how = draw(st.sampled_from(["tuple", "list"]))
    return list(values) if how == "list" else values


# --------------------------------------------------------------------------------------
# Valid configurations
# --------------------------------------------------------------------------------------

@st.composite
def conv_configs(draw):
    d = draw(st.integers(1, 3))
    groups = draw(st.sampled_from([1, 1, 2, 3]))
    Cg = 1 if draw(st.booleans()) and groups > 1 else draw(st.integers(1, 3))  # depthwise
    Fg = draw(st.integers(1, 3))
    N = draw(st.sampled_from([0, 1, 1, 2, 3]))
    kmax, smax = (2, 5) if d == 3 else (4, 9)
    K = tuple(draw(st.integers(1, kmax)) for _ in range(d))
    stride = tuple(draw(st.integers(1, 3)) for _ in range(d))
    dilation = tuple(draw(st.integers(1, 3)) for _ in range(d))
    S = tuple(draw(st.integers(1, smax)) for _ in range(d))
    form = draw(st.sampled_from(["int", "tuple", "pairs", "valid", "same", "full"]))
    if form == "int":
        padding = draw(st.integers(0, 3))
    elif form == "tuple":
        padding = _spell(draw, [draw(st.integers(0, 3)) for _ in range(d)])
        if isinstance(padding, (int, np.integer)):
            padding = (int(padding),) * d
    elif form == "pairs":
        pairs = tuple((draw(st.integers(0, 3)), draw(st.integers(0, 3))) for _ in range(d))
        padding = pairs if draw(st.booleans()) else [list(p) for p in pairs]
    else:
        padding = form
    pairs = ref.resolve_conv_padding(padding, S, K, stride, dilation)
    O = tuple(ref.conv_out_size(s, k, st_, dl, lo, hi)
              for s, k, st_, dl, (lo, hi) in zip(S, K, stride, dilation, pairs))
    assume(all(o >= 1 for o in O))
    return dict(
        d=d, groups=groups, C=groups * Cg, F=groups * Fg, Cg=Cg, N=N, K=K, S=S, O=O,
        stride=_spell(draw, stride), dilation=_spell(draw, dilation), padding=padding,
        dtype=draw(st.sampled_from([np.float32, np.float64])),
        batched=draw(st.booleans()) if N == 1 else True,
        bias=draw(st.sampled_from([None, "tied", "untied"])),
        layouts=[draw(st.sampled_from(ALL_LAYOUTS)) for _ in range(3)],
        seed=draw(st.integers(0, 2**32 - 1)),
    )


def _conv_kwargs(c):
    return dict(stride=c["stride"], padding=c["padding"], dilation=c["dilation"],
                groups=c["groups"])


def _conv_arrays(c):
    rng = np.random.default_rng(c["seed"])
    lead = (c["N"],) if c["batched"] else ()
    x_shape = lead + (c["C"],) + c["S"]
    w_shape = (c["F"], c["Cg"]) + c["K"]
    y_shape = lead + (c["F"],) + c["O"]
    x = _arr(rng, x_shape, c["dtype"], c["layouts"][0])
    w = _arr(rng, w_shape, c["dtype"], c["layouts"][1])
    gy = _arr(rng, y_shape, c["dtype"], c["layouts"][2])
    bias = None
    if c["bias"] == "tied":
        bias = _arr(rng, (c["F"],), c["dtype"], c["layouts"][2])
    elif c["bias"] == "untied":
        bias = _arr(rng, (c["F"],) + c["O"], c["dtype"], c["layouts"][2])
    return x, w, bias, gy, x_shape, w_shape, y_shape


def _unchanged(*pairs):
    for before, after in pairs:
        np.testing.assert_array_equal(before, after)


@given(conv_configs())
@settings(**SETTINGS)
def test_conv_forward_matches_reference(c):
    x, w, bias, _, _, _, y_shape = _conv_arrays(c)
    copies = [a.copy() for a in (x, w)] + ([bias.copy()] if bias is not None else [])
    y = ck.conv_forward(x, w, bias, **_conv_kwargs(c))
    assert y.shape == y_shape and y.dtype == c["dtype"]
    _unchanged(*zip(copies, (x, w, bias)))
    if c["N"]:
        assert_close(y, ref.conv_forward(x, w, bias, **_conv_kwargs(c)), c["dtype"])


@given(conv_configs())
@settings(**SETTINGS)
def test_conv_backward_input_matches_reference(c):
    _, w, _, gy, x_shape, _, _ = _conv_arrays(c)
    shape_arg = list(x_shape) if c["seed"] % 3 == 0 else x_shape
    gx = ck.conv_backward_input(gy, w, shape_arg, **_conv_kwargs(c))
    assert gx.shape == x_shape and gx.dtype == c["dtype"]
    if c["N"]:
        assert_close(gx, ref.conv_backward_input(gy, w, x_shape, **_conv_kwargs(c)), c["dtype"])


@given(conv_configs())
@settings(**SETTINGS)
def test_conv_backward_weight_matches_reference(c):
    x, _, _, gy, _, w_shape, _ = _conv_arrays(c)
    gw = ck.conv_backward_weight(x, gy, w_shape, **_conv_kwargs(c))
    assert gw.shape == w_shape and gw.dtype == c["dtype"]
    if c["N"]:
        expected = ref.conv_backward_weight(x, gy, w_shape, **_conv_kwargs(c))
    else:
        expected = np.zeros(w_shape)
    assert_close(gw, expected, c["dtype"])


@given(conv_configs(), st.booleans())
@settings(**FEWER)
def test_conv_backward_bias_matches_reference(c, untied):
    *_, gy, _, _, _ = _conv_arrays(c)
    gb_in = gy if c["batched"] else gy[None]
    gb = ck.conv_backward_bias(gb_in, untied=untied)
    expected = ref.conv_backward_bias(gb_in, untied=untied)
    assert gb.shape == expected.shape and gb.dtype == c["dtype"]
    assert_close(gb, expected, c["dtype"])


@given(conv_configs(), st.sampled_from(["forward", "input", "weight", "bias"]))
@settings(**FEWER)
def test_out_argument_gives_the_same_bits(c, which):
    """Into a garbage-filled out= the result is bit-identical to a fresh allocation."""
    x, w, bias, gy, x_shape, w_shape, _ = _conv_arrays(c)
    kw = _conv_kwargs(c)
    calls = {
        "forward": lambda **o: ck.conv_forward(x, w, bias, **kw, **o),
        "input": lambda **o: ck.conv_backward_input(gy, w, x_shape, **kw, **o),
        "weight": lambda **o: ck.conv_backward_weight(x, gy, w_shape, **kw, **o),
        "bias": lambda **o: ck.conv_backward_bias(gy if c["batched"] else gy[None], **o),
    }
    fresh = calls[which]()
    out = np.full(fresh.shape, np.nan, dtype=fresh.dtype)
    got = calls[which](out=out)
    assert got is out
    assert fresh.tobytes() == out.tobytes()


def _has_empty_window(S, K, stride, pad, dilation, O):
    """True if some pooling window has no tap inside the unpadded input."""
    for s, k, st_, p, dl, o in zip(S, K, stride, pad, dilation, O):
        for i in range(o):
            if not any(0 <= i * st_ - p + j * dl < s for j in range(k)):
                return True
    return False


@st.composite
def pool_configs(draw):
    d = draw(st.integers(1, 3))
    kmax, smax = (3, 6) if d == 3 else (4, 10)
    K = tuple(draw(st.integers(1, kmax)) for _ in range(d))
    stride = tuple(draw(st.integers(1, 3)) for _ in range(d))
    dilation = tuple(draw(st.integers(1, 2)) for _ in range(d))
    pad = tuple(draw(st.integers(0, k // 2)) for k in K)
    ceil_mode = draw(st.booleans())
    S = tuple(draw(st.integers(1, smax)) for _ in range(d))
    # A window longer than the padded input is refused by contract (issue 2), even where
    # PyTorch's ceil_mode would still give one output.
    assume(all(s + 2 * p >= dl * (k - 1) + 1 for s, k, p, dl in zip(S, K, pad, dilation)))
    O = tuple(ref.pool_out_size(s, k, st_, p, dl, ceil_mode)
              for s, k, st_, p, dl in zip(S, K, stride, pad, dilation))
    assume(all(o >= 1 for o in O))
    # Windows that lie entirely in the padding (possible with dilation) are tested
    # separately (test_maxpool_window_entirely_in_padding).
    assume(not _has_empty_window(S, K, stride, pad, dilation, O))
    N = draw(st.sampled_from([0, 1, 2, 3]))
    batched = draw(st.booleans()) if N == 1 else True
    use_none_stride = stride == K and draw(st.booleans())
    return dict(
        d=d, K=K, S=S, O=O, N=N, C=draw(st.integers(1, 3)), batched=batched,
        kernel_size=K if not batched else _spell(draw, K),
        stride=None if use_none_stride else _spell(draw, stride),
        padding=_spell(draw, pad), dilation=_spell(draw, dilation), ceil_mode=ceil_mode,
        dtype=draw(st.sampled_from([np.float32, np.float64])),
        layouts=[draw(st.sampled_from(ALL_LAYOUTS)) for _ in range(3)],
        # small integers make ties common (first maximum in scan order must win)
        ties=draw(st.booleans()),
        seed=draw(st.integers(0, 2**32 - 1)),
    )


def _pool_x(c):
    rng = np.random.default_rng(c["seed"])
    shape = ((c["N"],) if c["batched"] else ()) + (c["C"],) + c["S"]
    if c["ties"]:
        x = rng.integers(-2, 3, shape).astype(c["dtype"])
    else:
        x = rng.standard_normal(shape).astype(c["dtype"])
    return layout(x, c["layouts"][0]) if c["layouts"][0] != "c" else x, rng


def _pool_kwargs(c):
    return dict(stride=c["stride"], padding=c["padding"], dilation=c["dilation"],
                ceil_mode=c["ceil_mode"])


@given(pool_configs())
@settings(**SETTINGS)
def test_maxpool_forward_matches_reference(c):
    x, _ = _pool_x(c)
    before = x.copy()
    y, idx = ck.maxpool_forward(x, c["kernel_size"], **_pool_kwargs(c))
    np.testing.assert_array_equal(x, before)
    lead = ((c["N"],) if c["batched"] else ()) + (c["C"],)
    assert y.shape == lead + c["O"] and idx.shape == y.shape
    assert y.dtype == c["dtype"] and idx.dtype == np.int64
    if c["N"]:
        ey, ei = ref.maxpool_forward(x, c["kernel_size"], **_pool_kwargs(c))
        np.testing.assert_array_equal(idx, ei)
        np.testing.assert_array_equal(y.astype(np.float64), ey)  # values are copies: exact


@given(pool_configs())
@settings(**SETTINGS)
def test_maxpool_backward_matches_reference(c):
    assume(c["N"] > 0)
    x, rng = _pool_x(c)
    _, idx = ck.maxpool_forward(x, c["kernel_size"], **_pool_kwargs(c))
    gy = _arr(rng, idx.shape, c["dtype"], c["layouts"][1])
    idx_in = layout(idx, c["layouts"][2]) if c["layouts"][2] != "c" else idx
    kw = {} if c["batched"] else {"spatial_dims": c["d"]}
    gx = ck.maxpool_backward(gy, idx_in, x.shape, **kw)
    assert gx.shape == x.shape and gx.dtype == c["dtype"]
    assert_close(gx, ref.maxpool_backward(gy, idx, x.shape, c["d"]), c["dtype"])


# --------------------------------------------------------------------------------------
# Invalid configurations: exactly one thing broken
# --------------------------------------------------------------------------------------

REFUSED = (TypeError, ValueError)

BAD_INTS = [0, -1, -2**63, 2**63, 2**70, True, False, 1.0, 2.5, float("nan"), None, "2",
            [1, 2, 3, 4, 5], ()]
BAD_PADDING = [-1, (-1,) * 3, ((0, -1),) * 3, "bogus", "SAME", 2.0, True, None, 2**70,
               ((1, 2, 3),) * 3, [[0]] * 3, object()]


def _bad_param(draw, name, d):
    if name == "padding":
        v = draw(st.sampled_from(BAD_PADDING))
        if isinstance(v, tuple) and len(v) == 3:
            v = v[:d]
        return v
    if draw(st.booleans()) and d > 1:
        # one bad entry inside an otherwise good tuple
        vals = [1] * d
        vals[draw(st.integers(0, d - 1))] = draw(st.sampled_from(BAD_INTS[:10]))
        return tuple(vals)
    return draw(st.sampled_from(BAD_INTS))


def _bad_dtype_array(draw, a, alone=False):
    """a as a wrong kind of thing; ``alone``: a is the only float argument (so the other
    float dtype would be valid)."""
    kinds = ["int32", "int64", "bool", "complex64", "float16", "object", "bigendian",
             "list", "None", "scalar"]
    kind = draw(st.sampled_from(kinds if alone else kinds + ["other-float"]))
    if kind == "list":
        return a.tolist()
    if kind == "None":
        return None
    if kind == "scalar":
        return 1.0
    if kind == "bigendian":
        return a.astype(a.dtype.newbyteorder(">"))
    if kind == "other-float":
        return a.astype(np.float32 if a.dtype == np.float64 else np.float64)
    return a.astype(kind)


def _aliasing_out(draw, src, shape, dtype):
    """A C-contiguous writeable out= of the right shape and dtype sharing src's memory."""
    base = src
    while isinstance(base.base, np.ndarray):
        base = base.base
    size = int(np.prod(shape))
    if base.dtype == dtype and base.flags.writeable and base.flags.c_contiguous \
            and base.size >= size:
        off = draw(st.integers(0, base.size - size))
        return base.reshape(-1)[off:off + size].reshape(shape)
    return None


CONV_BREAKS = ["stride", "dilation", "padding", "groups", "x-kind", "w-kind", "bias-kind",
               "dtype-mix", "x-ndim", "channels", "kernel-too-big", "bias-shape",
               "grad-shape", "x_shape", "weight_shape", "out-alias", "out-readonly",
               "out-shape", "out-dtype", "out-fortran", "zero-size", "unknown-kw"]


@given(conv_configs(), st.sampled_from(["forward", "input", "weight"]),
       st.sampled_from(CONV_BREAKS), st.data())
@settings(**SETTINGS)
def test_invalid_conv_calls_are_refused(c, which, brk, data):
    draw = data.draw
    assume(c["N"] > 0)
    x, w, bias, gy, x_shape, w_shape, y_shape = _conv_arrays(c)
    kw = _conv_kwargs(c)
    args = {"forward": [x, w, bias], "input": [gy, w, x_shape],
            "weight": [x, gy, w_shape]}[which]
    fn = {"forward": ck.conv_forward, "input": ck.conv_backward_input,
          "weight": ck.conv_backward_weight}[which]
    out_shape = {"forward": y_shape, "input": x_shape, "weight": w_shape}[which]
    d = c["d"]
    if brk in ("stride", "dilation", "padding", "groups"):
        kw[brk] = _bad_param(draw, brk, d) if brk != "groups" else draw(
            st.sampled_from([0, -1, True, 1.5, None, "1", 2**70, c["C"] + 1]))
    elif brk == "x-kind":
        args[0] = _bad_dtype_array(draw, args[0])
    elif brk == "w-kind":
        args[1] = _bad_dtype_array(draw, args[1])
    elif brk == "bias-kind":
        assume(which == "forward" and bias is not None)
        args[2] = _bad_dtype_array(draw, bias)
        assume(args[2] is not None)
    elif brk == "dtype-mix":
        i = draw(st.sampled_from([0, 1]))
        args[i] = args[i].astype(np.float32 if c["dtype"] == np.float64 else np.float64)
    elif brk == "x-ndim":
        # an ndim no interpretation accepts: x/grad_y outside {d+1, d+2}, weight outside 3-5
        i = draw(st.sampled_from([0, 1]))
        a = args[i]
        if which == "forward" and i == 1:
            args[i] = a.reshape(a.shape[:1] + (-1,)) if draw(st.booleans()) else \
                a.reshape(a.shape + (1,) * (6 - a.ndim))
        else:
            args[i] = a.reshape(-1) if draw(st.booleans()) else \
                a.reshape(a.shape + (1,) * (d + 3 - a.ndim))
    elif brk == "channels":
        assume(which != "weight")
        bad_w = np.ones((c["F"], c["Cg"] + 1) + c["K"], c["dtype"])
        args[1] = bad_w
    elif brk == "kernel-too-big":
        assume(which == "forward")
        assume(c["padding"] not in ("same", "full"))  # those grow with the kernel
        Sp = [s + lo + hi for s, (lo, hi) in zip(c["S"], ref.resolve_conv_padding(
            c["padding"], c["S"], c["K"], c["stride"], c["dilation"]))]
        K = list(c["K"])
        K[0] = Sp[0] + 1  # with dilation >= 1 the span exceeds the padded input
        args[1] = np.ones((c["F"], c["Cg"]) + tuple(K), c["dtype"])
    elif brk == "bias-shape":
        assume(which == "forward")
        args[2] = np.ones((c["F"] + 1,), c["dtype"])
    elif brk == "grad-shape":
        assume(which != "forward")
        shape = list(gy.shape)
        i = draw(st.integers(0, len(shape) - 1))
        shape[i] += draw(st.sampled_from([-1, 1]))
        assume(shape[i] >= 0)
        args[0 if which == "input" else 1] = np.ones(shape, c["dtype"])
    elif brk == "x_shape":
        assume(which == "input")
        shape = list(x_shape)
        i = draw(st.integers(0, len(shape) - 1))
        shape[i] = draw(st.sampled_from([-1, 0, 2**70, True, 1.5, None, "3"]))
        if i == 0 and c["batched"] and shape[0] == 0:
            assume(False)  # a batch of 0 with a 0-batch grad_y is fine; ours is not 0
        args[2] = tuple(shape)
    elif brk == "weight_shape":
        assume(which == "weight")
        shape = list(w_shape)
        i = draw(st.integers(0, len(shape) - 1))
        bad = [-1, 0, 2**70, True, 1.5, None]
        if i < 2:
            bad.append(shape[i] + 1)  # (a kernel one larger can give the same output size)
        shape[i] = draw(st.sampled_from(bad))
        args[2] = tuple(shape)
    elif brk.startswith("out-"):
        if brk == "out-alias":
            src = draw(st.sampled_from([a for a in args if isinstance(a, np.ndarray)]))
            out = _aliasing_out(draw, src, out_shape, np.dtype(c["dtype"]))
            assume(out is not None and np.shares_memory(out, src))
        elif brk == "out-readonly":
            out = np.zeros(out_shape, c["dtype"])
            out.flags.writeable = False
        elif brk == "out-shape":
            out = np.zeros(out_shape + (1,), c["dtype"])
        elif brk == "out-dtype":
            out = np.zeros(out_shape, np.float32 if c["dtype"] == np.float64 else np.float64)
        else:
            out = np.zeros(out_shape[::-1], c["dtype"]).T
            assume(not out.flags.c_contiguous)
        kw["out"] = out
    elif brk == "zero-size":
        i = draw(st.sampled_from([0, 1]))
        a = args[i]
        ax = draw(st.integers(1, a.ndim - 1))  # not the batch axis
        shape = list(a.shape)
        shape[ax] = 0
        args[i] = np.zeros(shape, c["dtype"])
    elif brk == "unknown-kw":
        kw[draw(st.sampled_from(["strides", "pad", "kernel_size", "bogus"]))] = 1
    before = [a.copy() if isinstance(a, np.ndarray) else None for a in (x, w, gy)]
    with pytest.raises(REFUSED):
        fn(*args, **kw)
    for b, a in zip(before, (x, w, gy)):
        np.testing.assert_array_equal(a, b)  # a refused call never writes anything


POOL_BREAKS = ["kernel_size", "stride", "padding", "dilation", "ceil_mode", "x-kind",
               "pad-over-half", "kernel-too-big", "zero-size", "x-ndim"]


@given(pool_configs(), st.sampled_from(POOL_BREAKS), st.data())
@settings(**FEWER)
def test_invalid_maxpool_forward_calls_are_refused(c, brk, data):
    draw = data.draw
    x, _ = _pool_x(c)
    ks = c["kernel_size"]
    kw = _pool_kwargs(c)
    d = c["d"]
    if brk == "kernel_size":
        ks = _bad_param(draw, "kernel_size", d)
        assume(ks is not None)
    elif brk in ("stride", "padding", "dilation"):
        kw[brk] = _bad_param(draw, brk, d)
        if brk == "stride":
            assume(kw[brk] is not None)  # None is the documented default
    elif brk == "ceil_mode":
        kw["ceil_mode"] = draw(st.sampled_from([1, 0, None, "yes", 1.0]))
    elif brk == "x-kind":
        x = _bad_dtype_array(draw, x, alone=True)
    elif brk == "pad-over-half":
        K = c["K"]
        kw["padding"] = tuple(k // 2 + 1 for k in K)
    elif brk == "kernel-too-big":
        kw["padding"] = 0
        kw["dilation"] = 1
        ks = tuple(s + 1 for s in c["S"])
    elif brk == "zero-size":
        shape = list(x.shape)
        shape[draw(st.integers(len(shape) - d - 1, len(shape) - 1))] = 0
        x = np.zeros(shape, c["dtype"])
    elif brk == "x-ndim":
        x = x.reshape(-1)
        assume(x.ndim not in (d + 1, d + 2))
        ks = tuple(c["K"])
    with pytest.raises(REFUSED):
        ck.maxpool_forward(x, ks, **kw)


@given(pool_configs(), st.sampled_from(["forge", "idx-dtype", "grad-shape", "x_shape",
                                        "out-alias", "out-readonly", "spatial_dims"]),
       st.data())
@settings(**FEWER)
def test_invalid_maxpool_backward_calls_are_refused(c, brk, data):
    draw = data.draw
    assume(c["N"] > 0)
    x, rng = _pool_x(c)
    _, idx = ck.maxpool_forward(x, c["kernel_size"], **_pool_kwargs(c))
    gy = rng.standard_normal(idx.shape).astype(c["dtype"])
    x_shape = x.shape
    kw = {} if c["batched"] else {"spatial_dims": c["d"]}
    plane = int(np.prod(c["S"]))
    if brk == "forge":
        idx = idx.copy()
        k = draw(st.integers(0, idx.size - 1))
        idx.reshape(-1)[k] = draw(st.sampled_from([-1, plane, plane + 7, 2**62, 2**63 - 1,
                                                   -2**63, -plane]))
    elif brk == "idx-dtype":
        idx = idx.astype(draw(st.sampled_from([np.int32, np.uint64, np.float64, np.int16])))
    elif brk == "grad-shape":
        shape = list(gy.shape)
        shape[draw(st.integers(0, len(shape) - 1))] += 1
        gy = np.ones(shape, c["dtype"])
    elif brk == "x_shape":
        shape = list(x_shape)
        i = draw(st.integers(0, len(shape) - 1))
        shape[i] = draw(st.sampled_from([-1, 2**70, True, 1.5, None, shape[i] + 1]))
        assume(not (i >= len(shape) - c["d"] and shape[i] == x_shape[i] + 1))  # bigger plane is valid
        x_shape = tuple(shape)
    elif brk == "out-alias":
        out = _aliasing_out(draw, gy, x_shape, np.dtype(c["dtype"]))
        assume(out is not None and np.shares_memory(out, gy))
        kw["out"] = out
    elif brk == "out-readonly":
        out = np.zeros(x_shape, c["dtype"])
        out.flags.writeable = False
        kw["out"] = out
    elif brk == "spatial_dims":
        kw["spatial_dims"] = draw(st.sampled_from([0, -1, 4, True, 1.5, "2", 2**70]))
    with pytest.raises(REFUSED):
        ck.maxpool_backward(gy, idx, x_shape, **kw)


def test_out_aliasing_a_noncontiguous_input_is_refused():
    """An out= overlapping the caller's (non-contiguous) input must be refused, not
    silently overwrite it: the check must see the caller's array, not a contiguous copy."""
    buf = np.arange(8.0).reshape(1, 1, 8)
    x = buf[..., ::2]
    out = buf[..., :3]
    before = x.copy()
    with pytest.raises(ValueError, match="out"):
        ck.conv_forward(x, np.ones((1, 1, 2)), out=out)
    np.testing.assert_array_equal(x, before)


def test_maxpool_window_entirely_in_padding():
    """With dilation a window can hold only padding (x of length 1, kernel 2, padding 1,
    dilation 2 reads positions -1 and 1).  PyTorch returns -inf and an index one past the
    plane there.  Either convkern refuses such a geometry, or its backward pass accepts
    its own forward's indices (and gives that window no gradient): the pair must never
    refuse its own output."""
    x = np.ones((1, 1, 1))
    try:
        y, idx = ck.maxpool_forward(x, 2, stride=1, padding=1, dilation=2)
    except ValueError:
        return
    assert y[0, 0, 0] == -np.inf
    gx = ck.maxpool_backward(np.ones_like(y), idx, x.shape)
    np.testing.assert_array_equal(gx, np.zeros_like(x))
