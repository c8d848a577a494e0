"""The depthwise path of every pass on the geometries test_paths.py's kinds do not reach.

Forced on one-channel-per-group layers: several filters per group, asymmetric padding
(also past the window's reach), dilation, strides 2 and 3 on odd sizes, rows of one
element and rows that are not a whole number of vectors (whatever the ISA's width), a
window larger than the input, 1-3-D, a single group; the forward with untied bias and
ReLU, the weight gradient with the fused bias gradient: on the plane rows, and for one
filter per channel on the channels-last planes too.  Each is compared with the
float64 reference and with PyTorch, then run at 2 and 4 threads for identical bits.  NaN
and infinities: the forward and the weight gradient keep the zero padding's terms (0 * inf
is NaN), the input gradient has none (an infinite weight next to the border leaves
finite values in grad_x).
"""

import numpy as np
import pytest
import reference as ref
from conftest import DTYPES, assert_close

import convkern as ck

# (x shape, filters, groups, kernel, stride, padding pairs, dilation)
CASES = {
    "1d-asym-s2": ((2, 3, 17), 6, 3, (3,), (2,), ((1, 2),), (1,)),
    "1d-k5-s3-dil": ((2, 2, 40), 2, 2, (5,), (3,), ((4, 1),), (2,)),
    "2d-width1": ((1, 4, 9, 1), 4, 4, (3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1)),
    "2d-mult3-s2-dil": ((2, 2, 7, 13), 6, 2, (5, 3), (2, 2), ((0, 2), (2, 1)), (1, 2)),
    "2d-window-larger": ((1, 3, 2, 3), 3, 3, (5, 5), (1, 1), ((2, 2), (2, 2)), (1, 1)),
    "2d-s2-odd": ((2, 5, 15, 35), 5, 5, (3, 3), (2, 2), ((1, 1), (1, 1)), (1, 1)),
    "2d-s1-wide": ((1, 3, 5, 37), 3, 3, (3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1)),
    "2d-k5-s2": ((2, 2, 11, 21), 2, 2, (5, 5), (2, 2), ((2, 2), (2, 2)), (1, 1)),
    "2d-nopad-s2-even": ((1, 2, 10, 18), 2, 2, (3, 3), (2, 2), ((0, 0), (0, 0)), (1, 1)),
    "2d-one-group": ((2, 1, 11, 11), 3, 1, (3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1)),
    # padding past the window's reach: grad_y elements that reach no input
    "2d-pad-beyond": ((2, 3, 11, 9), 3, 3, (3, 3), (2, 3), ((3, 0), (1, 4)), (1, 1)),
    "2d-s3-dil2": ((1, 2, 16, 23), 4, 2, (3, 3), (3, 3), ((2, 1), (2, 2)), (2, 2)),
    "3d-mixed": ((1, 2, 5, 6, 7), 4, 2, (3, 2, 3), (2, 1, 2), ((1, 1), (0, 1), (1, 0)),
                 (1, 2, 1)),
    "3d-s1": ((2, 3, 4, 5, 19), 3, 3, (3, 3, 3), (1, 1, 1), ((1, 1),) * 3, (1, 1, 1)),
}


# The depthwise paths: the plane rows, and for one filter per channel the channels-last
# planes (lanes over channels; the input gradient's at stride 1 only, the rows
# otherwise).
VARIANTS = ("depthwise", "depthwise_channels_last")
PASSES = ("forward", "backward_input", "backward_weight")


def _plan(case, dtype, bias="tied", variant="depthwise"):
    x_shape, f, groups, k, s, pads, dil = case
    plan = ck.conv_plan(x_shape, (f, 1) + k, dtype=dtype, stride=s, padding=pads,
                        dilation=dil, groups=groups, bias=bias)
    for p in PASSES:
        assert "depthwise" in plan.valid_paths(p)
    one_filter = f == groups
    stride1 = all(v == 1 for v in s)
    assert ("depthwise_channels_last" in plan.valid_paths("forward")) == one_filter
    assert ("depthwise_channels_last" in plan.valid_paths("backward_weight")) == one_filter
    assert ("depthwise_channels_last" in plan.valid_paths("backward_input")) == (
        one_filter and stride1 and plan._facts.flipped)
    if variant not in plan.valid_paths("forward"):
        pytest.skip(f"{variant} takes one filter per channel only")
    return plan.force(**{p: variant if variant in plan.valid_paths(p) else "depthwise"
                         for p in PASSES})


def _kw(case):
    _, _, groups, _, s, pads, dil = case
    return dict(stride=s, padding=pads, dilation=dil, groups=groups)


def _torch_grads(torch, case, x, w, gy):
    """PyTorch's y, grad_x and grad_w of the explicitly padded convolution."""
    _, _, groups, k, s, pads, dil = case
    d = len(k)
    xt = torch.from_numpy(x).requires_grad_(True)
    wt = torch.from_numpy(w).requires_grad_(True)
    flat = [p for pair in reversed(pads) for p in pair]
    yt = getattr(torch.nn.functional, f"conv{d}d")(torch.nn.functional.pad(xt, flat), wt,
                                                   None, stride=s, dilation=dil,
                                                   groups=groups)
    yt.backward(torch.from_numpy(gy))
    return yt.detach().numpy(), xt.grad.numpy(), wt.grad.numpy()


def _same_bits_at(threads, call, first):
    try:
        for n in threads:
            ck.set_num_threads(n)
            again = call()
            again = again if isinstance(again, tuple) else (again,)
            first_t = first if isinstance(first, tuple) else (first,)
            assert [a.tobytes() for a in again] == [a.tobytes() for a in first_t], (
                f"other bits on {n} threads")
    finally:
        ck.set_num_threads(None)


@pytest.fixture
def all_threads(monkeypatch):
    """Let every call use all the threads it is given (small calls normally use fewer)."""
    monkeypatch.setattr("convkern.plan.threads_for", lambda work, grain: ck.get_num_threads())


@pytest.mark.torch
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", list(CASES))
def test_depthwise_passes_match_reference_and_torch(name, dtype, variant, torch, all_threads):
    case = CASES[name]
    rng = np.random.default_rng(sum(map(ord, name)))
    plan = _plan(case, dtype, variant=variant)
    x = rng.standard_normal(plan.x_shape).astype(dtype)
    w = rng.standard_normal(plan.weight_shape).astype(dtype)
    b = rng.standard_normal(plan.weight_shape[0]).astype(dtype)
    gy = rng.standard_normal(plan.y_shape).astype(dtype)
    x64, w64, b64, gy64 = (a.astype(np.float64) for a in (x, w, b, gy))
    kw = _kw(case)
    ck.set_num_threads(1)
    y = plan.forward(x, w, b)
    gx = plan.backward_input(gy, w)
    gw, gb = plan.backward_weight_bias(x, gy)
    assert_close(y, ref.conv_forward(x64, w64, b64, **kw), dtype, err_msg="forward")
    assert_close(gx, ref.conv_backward_input(gy64, w64, plan.x_shape, **kw), dtype,
                 err_msg="input gradient")
    assert_close(gw, ref.conv_backward_weight(x64, gy64, plan.weight_shape, **kw), dtype,
                 err_msg="weight gradient")
    assert_close(gb, ref.conv_backward_bias(gy64), dtype, err_msg="fused bias gradient")
    assert gw.tobytes() == plan.backward_weight(x, gy).tobytes()
    yt, gxt, gwt = _torch_grads(torch, case, x, w, gy)
    d = len(case[3])
    assert_close(y, yt.astype(np.float64) + b64.reshape((-1,) + (1,) * d), dtype,
                 err_msg="forward vs torch")
    assert_close(gx, gxt.astype(np.float64), dtype, err_msg="input gradient vs torch")
    assert_close(gw, gwt.astype(np.float64), dtype, err_msg="weight gradient vs torch")
    _same_bits_at((2, 4), lambda: plan.forward(x, w, b), y)
    _same_bits_at((2, 4), lambda: plan.backward_input(gy, w), gx)
    _same_bits_at((2, 4), lambda: plan.backward_weight_bias(x, gy), (gw, gb))


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ["1d-asym-s2", "2d-mult3-s2-dil", "3d-mixed", "2d-s2-odd",
                                  "3d-s1"])
def test_depthwise_forward_untied_bias_and_relu(name, dtype, variant, all_threads):
    case = CASES[name]
    rng = np.random.default_rng(len(name))
    plan = _plan(case, dtype, bias="untied", variant=variant)
    x = rng.standard_normal(plan.x_shape).astype(dtype)
    w = rng.standard_normal(plan.weight_shape).astype(dtype)
    b = rng.standard_normal(plan.y_shape[1:]).astype(dtype)
    want = np.maximum(ref.conv_forward(x.astype(np.float64), w.astype(np.float64), **_kw(case))
                      + b.astype(np.float64), 0)
    ck.set_num_threads(1)
    got = plan.forward(x, w, b, activation="relu")
    assert (got == 0).any() and (got > 0).any()
    assert_close(got, want, dtype)
    _same_bits_at((2, 4), lambda: plan.forward(x, w, b, activation="relu"), got)


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # reference's
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ["2d-s2-odd", "2d-s1-wide", "3d-s1", "1d-k5-s3-dil"])
def test_depthwise_nan_inf_as_the_padded_convolution(name, dtype, variant):
    case = CASES[name]
    rng = np.random.default_rng(7 + len(name))
    plan = _plan(case, dtype, variant=variant)
    kw = _kw(case)
    x = rng.standard_normal(plan.x_shape).astype(dtype)
    w = rng.standard_normal(plan.weight_shape).astype(dtype)
    gy = rng.standard_normal(plan.y_shape).astype(dtype)
    x.reshape(-1)[rng.choice(x.size, 3, replace=False)] = [np.nan, np.inf, -np.inf]
    gy.reshape(-1)[rng.choice(gy.size, 3, replace=False)] = [np.nan, np.inf, -np.inf]
    # the first tap of every filter is infinite: it meets the zero padding
    w.reshape(w.shape[0], -1)[:, 0] = np.inf
    x64, w64, gy64 = (a.astype(np.float64) for a in (x, w, gy))
    y = plan.forward(x, w)
    gx = plan.backward_input(gy, w)
    gw = plan.backward_weight(x, gy)
    expected_y = ref.conv_forward(x64, w64, **kw)
    expected_gx = ref.conv_backward_input(gy64, w64, plan.x_shape, **kw)
    assert np.isnan(expected_y).any() and np.isfinite(expected_gx).any()
    assert_close(y, expected_y, dtype, err_msg="forward")
    assert_close(gx, expected_gx, dtype, err_msg="input gradient")
    assert_close(gw, ref.conv_backward_weight(x64, gy64, plan.weight_shape, **kw), dtype,
                 err_msg="weight gradient")


@pytest.mark.parametrize("x_shape, f, groups, preferred, input_preferred", [
    ((32, 32, 32, 32), 32, 32, True, True),   # MobileNet's depthwise layer
    ((1, 8, 20, 20), 16, 8, True, True),      # multiplier 2
    ((4, 1, 28, 28), 2, 1, True, True),       # one channel, fewer filters than a GEMM block
    ((4, 1, 28, 28), 64, 1, False, False),    # one channel, many filters: the GEMM blocks fill
    ((2, 2, 20, 20), 64, 2, True, False),     # two groups of many filters: col2im's GEMM fills
    ((4, 8, 20, 20), 8, 4, False, False),     # two channels per group: not valid
])
def test_depthwise_is_chosen_for_one_channel_per_group(x_shape, f, groups, preferred,
                                                       input_preferred):
    plan = ck.conv_plan(x_shape, (f, x_shape[1] // groups, 3, 3), padding=1, groups=groups)
    valid = x_shape[1] // groups == 1
    for p in ("forward", "backward_input", "backward_weight"):
        assert ("depthwise" in plan.valid_paths(p)) == valid
    assert (plan.paths["backward_input"] == "depthwise") == input_preferred
    assert (plan.paths["forward"] == "depthwise") == preferred
    assert (plan.paths["backward_weight"] == "depthwise") == preferred


def test_depthwise_is_not_valid_for_strides_or_halos_its_plane_copy_cannot_take():
    """The plane copy splits rows into stride phases and pads them: a huge stride, dilation
    or padding (which validation allows) would overflow its size, so those layers take
    the GEMM paths (the fuzzer found heap overflows here under AddressSanitizer)."""
    huge = 1 << 61
    for x_shape, w_shape, kw in [
        ((1, 1, 5), (1, 1, 1), dict(stride=huge)),
        ((1, 1, 1), (1, 1, 2), dict(stride=huge, padding=1)),
        ((3, 2), (9, 1, 1), dict(groups=3, stride=huge)),
        ((1, 4, 9), (4, 1, 3), dict(groups=4, stride=5)),
        ((1, 4, 9), (4, 1, 3), dict(groups=4, padding=300)),
    ]:
        plan = ck.conv_plan(x_shape, w_shape, **kw)
        for p in ("forward", "backward_input", "backward_weight"):
            assert "depthwise" not in plan.valid_paths(p), (x_shape, kw, p)
    assert "depthwise" in ck.conv_plan((1, 4, 9), (4, 1, 3), groups=4, stride=4).valid_paths(
        "forward")
