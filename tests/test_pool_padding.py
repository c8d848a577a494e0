"""Max-pool padding like convolution's: (before, after) pairs, 'same', 'valid', 'full'.

The oracle is PyTorch applied to the input explicitly padded with -inf
(``F.pad(x, pads, value=-inf)`` then ``F.max_pool{d}d`` without padding), its indices
mapped back from the padded plane to the unpadded one.  'same' is checked against ONNX's
``auto_pad`` formulas (SAME_UPPER; SAME_LOWER given as explicit pairs), written out here.
Cases are drawn at random over every (before, after) below the dilated kernel extent; a
brute-force scan says which ones have a window without an input tap, and those must be a
ValueError.
"""

import itertools

import numpy as np
import pytest
from conftest import DTYPES, assert_close

import convkern as ck

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402

pytestmark = pytest.mark.torch
torch.set_num_threads(1)

POOL = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}


def _out_size(s, k, st, lo, hi, dl, ceil_mode):
    """convkern's rule: PyTorch's pooling_output_shape with the before pad as its pad_l."""
    span = dl * (k - 1) + 1
    out = (s + lo + hi - span + (st - 1 if ceil_mode else 0)) // st + 1
    if ceil_mode and (out - 1) * st >= s + lo:
        out -= 1
    return out


def _empty_window(s, k, st, lo, hi, dl, ceil_mode):
    """True when some window of this axis has no tap inside [0, s)."""
    out = _out_size(s, k, st, lo, hi, dl, ceil_mode)
    return any(not any(0 <= o * st - lo + j * dl < s for j in range(k)) for o in range(out))


def _torch_padded_pool(x, kernel, stride, pairs, dilation, ceil_mode, requires_grad=False):
    """PyTorch on the -inf-padded input: (values, indices in the unpadded plane, x tensor)."""
    d = len(kernel)
    xt = torch.from_numpy(x.copy()).requires_grad_(requires_grad)
    flat = [p for lo_hi in reversed(pairs) for p in lo_hi]  # F.pad lists the last axis first
    xp = F.pad(xt, flat, value=-float("inf"))
    y, idx = POOL[d](xp, kernel, stride, 0, dilation, ceil_mode=ceil_mode, return_indices=True)
    padded = xp.shape[2:]
    coords = np.unravel_index(idx.numpy(), padded)
    coords = [c - lo for c, (lo, _) in zip(coords, pairs)]
    inside = np.all([(c >= 0) & (c < n) for c, n in zip(coords, x.shape[2:])], axis=0)
    unpadded = np.ravel_multi_index([np.clip(c, 0, n - 1) for c, n in zip(coords, x.shape[2:])],
                                    x.shape[2:])
    return y, np.where(inside, unpadded, -1), xt


def _random_case(rng, d):
    kernel, stride, dilation, pairs, spatial = [], [], [], [], []
    for _ in range(d):
        k, st, dl = int(rng.integers(1, 5)), int(rng.integers(1, 4)), int(rng.integers(1, 4))
        span = dl * (k - 1) + 1
        lo, hi = int(rng.integers(0, span)), int(rng.integers(0, span))
        s = int(rng.integers(max(1, span - lo - hi), span + 7))
        kernel.append(k), stride.append(st), dilation.append(dl), pairs.append((lo, hi))
        spatial.append(s)
    return tuple(kernel), tuple(stride), tuple(dilation), tuple(pairs), tuple(spatial)


@pytest.mark.parametrize("ceil_mode", [False, True])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("d", [1, 2, 3])
def test_pairs_match_torch_on_the_padded_input(d, dtype, ceil_mode, rng):
    checked = refused = 0
    for _ in range({1: 60, 2: 40, 3: 25}[d]):
        kernel, stride, dilation, pairs, spatial = _random_case(rng, d)
        x = rng.standard_normal((2, 3) + spatial).astype(dtype)
        kw = dict(stride=stride, padding=pairs, dilation=dilation, ceil_mode=ceil_mode)
        axes = list(zip(spatial, kernel, stride, pairs, dilation))
        if any(_empty_window(s, k, st, lo, hi, dl, ceil_mode) for s, k, st, (lo, hi), dl in axes):
            with pytest.raises(ValueError, match="covers only padding"):
                ck.maxpool_forward(x, kernel, **kw)
            refused += 1
            continue
        y, idx = ck.maxpool_forward(x, kernel, **kw)
        expected_shape = tuple(_out_size(s, k, st, lo, hi, dl, ceil_mode)
                               for s, k, st, (lo, hi), dl in axes)
        assert y.shape == (2, 3) + expected_shape
        yt, it, xt = _torch_padded_pool(x, kernel, stride, pairs, dilation, ceil_mode,
                                        requires_grad=True)
        # ceil_mode: PyTorch on the explicitly padded input may add windows that start in
        # the padding after (all -inf); convkern's windows start before it, as for
        # PyTorch's own padding.  Compare the common windows; the extra ones are empty.
        common = (slice(None), slice(None)) + tuple(slice(0, o) for o in y.shape[2:])
        extra = np.ones(yt.shape, bool)
        extra[common] = False
        assert np.all(np.isneginf(yt.detach().numpy()[extra]))
        np.testing.assert_array_equal(y, yt.detach().numpy()[common])
        np.testing.assert_array_equal(idx, it[common])
        g = rng.standard_normal(y.shape).astype(dtype)
        g_full = np.zeros(yt.shape, dtype)
        g_full[common] = g
        yt.backward(torch.from_numpy(g_full))
        assert_close(ck.maxpool_backward(g, idx, x.shape), xt.grad.numpy(), dtype)
        checked += 1
    assert checked >= 5, (checked, refused)


def _onnx_same(s, k, st, dl, upper):
    """ONNX auto_pad SAME_UPPER / SAME_LOWER: output ceil(s / st), pads (head, tail)."""
    out = -(-s // st)
    total = max((out - 1) * st + (k - 1) * dl + 1 - s, 0)
    small, big = total // 2, total - total // 2
    return (small, big) if upper else (big, small)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("d", [1, 2, 3])
def test_same_is_onnx_same_upper_and_pairs_give_same_lower(d, dtype, rng):
    sizes = {1: [(5,), (8,), (1,), (13,)], 2: [(5, 8), (7, 4), (2, 9)], 3: [(5, 4, 3), (3, 6, 2)]}
    kernels = {1: [2, 3, 4], 2: [(2, 2), (3, 2), (4, 3)], 3: [(2, 2, 2), (3, 2, 3)]}
    strides = {1: [1, 2, 3], 2: [(1, 1), (2, 3), (3, 2)], 3: [(1, 2, 1), (2, 2, 2)]}
    for spatial, kernel, stride in itertools.product(sizes[d], kernels[d], strides[d]):
        kernel = (kernel,) if isinstance(kernel, int) else kernel
        stride = (stride,) if isinstance(stride, int) else stride
        x = rng.standard_normal((2, 3) + spatial).astype(dtype)
        expected_out = tuple(-(-s // st) for s, st in zip(spatial, stride))
        for upper in (True, False):
            pairs = tuple(_onnx_same(s, k, st, 1, upper)
                          for s, k, st in zip(spatial, kernel, stride))
            padding = "same" if upper else pairs
            y, idx = ck.maxpool_forward(x, kernel, stride=stride, padding=padding)
            assert y.shape[2:] == expected_out, (spatial, kernel, stride, upper)
            yt, it, _ = _torch_padded_pool(x, kernel, stride, pairs, (1,) * d, False)
            np.testing.assert_array_equal(y, yt.numpy())
            np.testing.assert_array_equal(idx, it)


def test_same_with_dilation_and_the_empty_window_case():
    x = np.arange(2 * 3 * 7 * 9, dtype=np.float64).reshape(2, 3, 7, 9)[..., ::-1].copy()
    y, idx = ck.maxpool_forward(x, (3, 2), stride=(2, 1), padding="same", dilation=(2, 3))
    pairs = tuple(_onnx_same(s, k, st, dl, True)
                  for s, k, st, dl in zip((7, 9), (3, 2), (2, 1), (2, 3)))
    yt, it, _ = _torch_padded_pool(x, (3, 2), (2, 1), pairs, (2, 3), False)
    assert y.shape[2:] == (4, 9)
    np.testing.assert_array_equal(y, yt.numpy())
    np.testing.assert_array_equal(idx, it)
    # one input element, kernel 2 with dilation 3: 'same' pads (1, 2), the only window
    # reads positions -1 and 2, neither of which exists
    with pytest.raises(ValueError, match="covers only padding"):
        ck.maxpool_forward(np.ones((1, 1, 1)), 2, stride=1, padding="same", dilation=3)


@pytest.mark.parametrize("padding", ["valid", 0, (0, 0), ((0, 0), (0, 0))])
def test_valid_and_zero_paddings_are_no_padding(padding):
    x = np.random.default_rng(0).standard_normal((2, 3, 7, 6))
    y, idx = ck.maxpool_forward(x, 3, stride=2, padding=padding)
    y0, idx0 = ck.maxpool_forward(x, 3, stride=2)
    np.testing.assert_array_equal(y, y0)
    np.testing.assert_array_equal(idx, idx0)


def test_symmetric_pairs_equal_int_padding_and_full_is_span_minus_one():
    x = np.random.default_rng(1).standard_normal((2, 3, 9, 8)).astype(np.float32)
    for p in (0, 1):
        a = ck.maxpool_forward(x, 3, stride=2, padding=p, ceil_mode=True)
        b = ck.maxpool_forward(x, 3, stride=2, padding=((p, p), (p, p)), ceil_mode=True)
        for u, v in zip(a, b):
            np.testing.assert_array_equal(u, v)
    y, idx = ck.maxpool_forward(x, (3, 2), stride=1, padding="full", dilation=(1, 2))
    yt, it, _ = _torch_padded_pool(x, (3, 2), (1, 1), ((2, 2), (2, 2)), (1, 2), False)
    np.testing.assert_array_equal(y, yt.numpy())
    np.testing.assert_array_equal(idx, it)


def test_pairs_may_exceed_half_the_kernel_but_ints_may_not():
    x = np.random.default_rng(2).standard_normal((1, 2, 6))
    y, idx = ck.maxpool_forward(x, 3, stride=1, padding=((2, 0),))  # before 2 > 3 // 2
    yt, it, _ = _torch_padded_pool(x, (3,), (1,), ((2, 0),), (1,), False)
    np.testing.assert_array_equal(y, yt.numpy())
    np.testing.assert_array_equal(idx, it)
    with pytest.raises(ValueError, match="over half the kernel"):
        ck.maxpool_forward(x, 3, padding=2)
    with pytest.raises(ValueError, match="over half the kernel"):
        ck.maxpool_forward(x, (3,), padding=(2,))


@pytest.mark.parametrize("padding, pattern", [
    (((3, 0), (0, 0)), r"smaller than the dilated kernel extent 3"),
    (((0, 0), (0, 2)), r"padding \(0, 2\) along spatial axis 1 .*extent 2"),
    (((0, 5), (0, 0)), r"extent 3"),
    (((1, 1, 1), (0, 0)), r"padding\[0\] must be an int or a \(before, after\) pair"),
    (((-1, 0), (0, 0)), r"padding\[0\]\[0\] must be >= 0"),
    (((True, 0), (0, 0)), r"padding\[0\]\[0\].*bool"),
    (((1.0, 0), (0, 0)), r"padding\[0\]\[0\].*integer"),
    (((0, 0),), r"padding must have 2 entries"),
    ("SAME", r"padding must be 'valid', 'same' or 'full'"),
    ("same_lower", r"padding must be 'valid', 'same' or 'full'"),
])
def test_bad_pool_paddings_are_value_errors(padding, pattern):
    x = np.zeros((1, 2, 6, 6))
    with pytest.raises(ValueError, match=pattern):
        ck.maxpool_forward(x, (3, 2), padding=padding)


def test_dilated_pair_bound_uses_the_dilated_extent():
    x = np.random.default_rng(3).standard_normal((1, 1, 10))
    ck.maxpool_forward(x, 2, stride=1, padding=((2, 2),), dilation=3)  # span 4: fine
    with pytest.raises(ValueError, match="extent 4"):
        ck.maxpool_forward(x, 2, stride=1, padding=((4, 0),), dilation=3)


@pytest.mark.parametrize("dtype", DTYPES)
def test_maxpool_layer_with_pairs_and_same_matches_torch(dtype, rng, tmp_path):
    x = rng.standard_normal((2, 3, 7, 6)).astype(dtype)
    pairs = ((0, 2), (2, 1))
    for layer, torch_pairs in (
        (ck.MaxPool(3, stride=2, padding=pairs, ceil_mode=True), pairs),
        (ck.MaxPool((3, 2), stride=2, padding="same"),
         tuple(_onnx_same(s, k, 2, 1, True) for s, k in zip((7, 6), (3, 2)))),
    ):
        kernel = (3, 3) if layer.kernel_size == 3 else (3, 2)
        y = layer(x)
        yt, _, xt = _torch_padded_pool(x, kernel, (2, 2), torch_pairs, (1, 1), layer.ceil_mode,
                                       requires_grad=True)
        common = (slice(None), slice(None)) + tuple(slice(0, o) for o in y.shape[2:])
        np.testing.assert_array_equal(y, yt.detach().numpy()[common])
        g = rng.standard_normal(y.shape).astype(dtype)
        g_full = np.zeros(yt.shape, dtype)
        g_full[common] = g
        yt.backward(torch.from_numpy(g_full))
        assert_close(layer.backward(g), xt.grad.numpy(), dtype)
        layer.save(tmp_path / "pool.npz")
        again = ck.load_model(tmp_path / "pool.npz")
        assert again.padding == layer.padding
        np.testing.assert_array_equal(again(x), y)


@pytest.mark.parametrize("padding, error, pattern", [
    (((1, 2, 3),), ValueError, r"padding"),
    (((0, 1), (0, 1), (0, 1), (0, 1)), ValueError, r"1, 2 or 3 entries"),
    ("bogus", ValueError, r"padding must be"),
    (((0, -1),), ValueError, r"padding\[1\] must be >= 0"),
    (1.5, ValueError, r"padding must be an integer"),
])
def test_maxpool_layer_refuses_bad_paddings(padding, error, pattern):
    with pytest.raises(error, match=pattern):
        ck.MaxPool(3, padding=padding)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("d", [1, 2, 3])
def test_ties_and_nan_with_pairs_match_the_reference(d, dtype, rng):
    import reference as ref

    done = 0
    for _ in range(30):
        kernel, stride, dilation, pairs, spatial = _random_case(rng, d)
        axes = list(zip(spatial, kernel, stride, pairs, dilation))
        if any(_empty_window(s, k, st, lo, hi, dl, False) for s, k, st, (lo, hi), dl in axes):
            continue
        # few distinct values: many ties; and a few NaNs
        x = rng.integers(-2, 3, (2, 2) + spatial).astype(dtype)
        x[rng.random(x.shape) < 0.05] = np.nan
        for padding in (pairs, "same"):
            try:
                y, idx = ck.maxpool_forward(x, kernel, stride=stride, padding=padding,
                                            dilation=dilation)
            except ValueError as exc:  # 'same' with dilation may leave a window empty
                assert padding == "same" and "covers only padding" in str(exc)
                continue
            ry, ridx = ref.maxpool_forward(x, kernel, stride=stride, padding=padding,
                                           dilation=dilation)
            np.testing.assert_array_equal(idx, ridx)
            np.testing.assert_array_equal(y, ry.astype(dtype))
            done += 1
    assert done >= 10


def test_onnx_precomputed_maxpool_examples():
    # ONNX's MaxPool examples on x = 1..25 as a 5x5 image
    x = np.arange(1, 26, dtype=np.float32).reshape(1, 1, 5, 5)
    # maxpool_2d_precomputed_same_upper: kernel 3, strides 2, auto_pad SAME_UPPER
    y, _ = ck.maxpool_forward(x, 3, stride=2, padding="same")
    np.testing.assert_array_equal(y[0, 0], [[7, 9, 10], [17, 19, 20], [22, 24, 25]])
    # maxpool_2d_precomputed_pads: kernel 5, pads 2 on every side
    y, _ = ck.maxpool_forward(x, 5, stride=1, padding=((2, 2), (2, 2)))
    rows = [[13, 14, 15, 15, 15], [18, 19, 20, 20, 20]] + [[23, 24, 25, 25, 25]] * 3
    np.testing.assert_array_equal(y[0, 0], rows)
    # kernel 2, stride 1: SAME_UPPER pads (0, 1), SAME_LOWER (1, 0)
    upper, _ = ck.maxpool_forward(x, 2, stride=1, padding="same")
    lower, _ = ck.maxpool_forward(x, 2, stride=1, padding=((1, 0), (1, 0)))
    shifted = np.minimum(np.arange(5) + 1, 4)  # window (i, i + 1), clipped at the end
    np.testing.assert_array_equal(upper[0, 0], x[0, 0][np.ix_(shifted, shifted)])
    np.testing.assert_array_equal(lower[0, 0], x[0, 0])
