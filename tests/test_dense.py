"""The dense path: a window that covers its whole unpadded input is one matrix product.

tests/test_paths.py forces it (and every other valid path) on a grouped geometry in 1-3 D;
here: which layers plan it, its bits against the GEMM paths of a larger input, its
independence from the batch and the thread count on shapes that cross its tiles and
reduction blocks, non-finite weights, and the Dense layer on it.
"""

import numpy as np
import pytest
import reference as ref
from conftest import DTYPES, assert_close

import convkern as ck


@pytest.fixture
def all_threads(monkeypatch):
    """Let every call use all the threads it is given (small calls normally use fewer)."""
    monkeypatch.setattr("convkern.plan.threads_for", lambda work, grain: ck.get_num_threads())
    yield
    ck.set_num_threads(None)


@pytest.mark.parametrize("x_shape, w_shape, kw, dense", [
    ((64, 16, 5, 5), (120, 16, 5, 5), {}, True),                 # LeNet-5's C5
    ((32, 2048, 1), (256, 2048, 1), {}, True),                   # a Dense layer
    ((3, 6, 4, 5, 3), (8, 3, 4, 5, 3), dict(groups=2), True),    # grouped, 3-D
    ((2, 4, 7), (5, 4, 7), dict(stride=3), True),                # any stride: one position
    ((2, 4, 7), (5, 4, 5), {}, False),                           # three positions
    ((2, 4, 5), (5, 4, 5), dict(padding=1), False),              # padded
    ((2, 4, 5), (5, 4, 5), dict(padding=((0, 2),), stride=2), False),  # padding after: 2
    # dilated: the taps reach x[0] and x[3], the padding after (found by test_properties)
    ((2, 2, 2), (1, 2, 2), dict(padding=((0, 2),), dilation=3), False),
])
def test_a_window_covering_the_unpadded_input_plans_dense(x_shape, w_shape, kw, dense):
    plan = ck.conv_plan(x_shape, w_shape, **kw)
    for p in ("forward", "backward_input", "backward_weight"):
        assert ("dense" in plan.valid_paths(p)) == dense
        assert (plan.paths[p] == "dense") == dense


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("d", [1, 2, 3])
def test_dense_forward_has_the_bits_of_the_same_window_in_a_larger_input(d, dtype):
    """Every forward path sums in the same reduction blocks and order, so a window has the
    same bits as its own input (dense) as inside a larger one (slab, im2col): a dask chunk
    of one window equals the whole-array call."""
    rng = np.random.default_rng(d)
    k = (5, 4, 3)[:d]
    x = rng.standard_normal((5, 30) + tuple(s + 3 for s in k)).astype(dtype)
    w = rng.standard_normal((21, 30) + k).astype(dtype)
    b = rng.standard_normal(21).astype(dtype)
    big = ck.conv_plan(x.shape, w.shape, dtype=dtype, bias="tied")
    window = np.ascontiguousarray(x[(Ellipsis,) + tuple(slice(0, s) for s in k)])
    one = ck.conv_plan(window.shape, w.shape, dtype=dtype, bias="tied")
    assert one.paths["forward"] == "dense"
    at_origin = (Ellipsis,) + (slice(0, 1),) * d
    for path in big.valid_paths("forward"):
        got = big.force(forward=path).forward(x, w, b, activation="relu")[at_origin]
        np.testing.assert_array_equal(one.forward(window, w, b, activation="relu"), got,
                                      err_msg=path)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n, c, f", [(67, 4099, 37), (1, 300, 130), (40, 3, 1)])
def test_dense_passes_cross_tiles_and_blocks_with_the_same_bits_on_any_threads(n, c, f, dtype,
                                                                              all_threads):
    """Reductions longer than a KC block with a ragged end, batches and filters that leave
    ragged micro-kernel blocks, a batch of one: the float64 reference's result, the same
    bits at 1, 2 and 4 threads, and each sample's outputs independent of the batch."""
    rng = np.random.default_rng(n + c + f)
    x = rng.standard_normal((n, c, 1)).astype(dtype)
    w = rng.standard_normal((f, c, 1)).astype(dtype)
    b = rng.standard_normal(f).astype(dtype)
    gy = rng.standard_normal((n, f, 1)).astype(dtype)
    plan = ck.conv_plan(x.shape, w.shape, dtype=dtype, bias="tied")
    assert set(plan.paths.values()) == {"dense", "sum"}
    x64, w64, gy64 = (a.astype(np.float64) for a in (x, w, gy))
    expected = (ref.conv_forward(x64, w64, b.astype(np.float64)),
                ref.conv_backward_input(gy64, w64, x.shape),
                ref.conv_backward_weight(x64, gy64, w.shape),
                ref.conv_backward_bias(gy64))
    results = {}
    for nt in (1, 2, 4):
        ck.set_num_threads(nt)
        got = (plan.forward(x, w, b), plan.backward_input(gy, w)) + plan.backward_weight_bias(x, gy)
        if nt == 1:
            for a, e, name in zip(got, expected, ("forward", "input", "weight", "bias")):
                assert_close(a, e, dtype, err_msg=name)
            results = [a.tobytes() for a in got]
        assert [a.tobytes() for a in got] == results, f"other bits on {nt} threads"
    first = ck.conv_plan(x[:1].shape, w.shape, dtype=dtype, bias="tied")
    np.testing.assert_array_equal(first.forward(x[:1], w, b), plan.forward(x, w, b)[:1])


@pytest.mark.torch
def test_dense_input_gradient_with_non_finite_weights_matches_torch(torch):
    # no padding: unlike the flipped paths, every product is one of the true gradient's
    x = np.ones((3, 4, 2, 2))
    w = np.arange(6 * 16, dtype=np.float64).reshape(6, 4, 2, 2)
    w[1, 2, 0, 1], w[4, 0, 1, 1] = np.inf, np.nan
    gy = np.linspace(-1, 1, 18).reshape(3, 6, 1, 1)
    expected = torch.nn.grad.conv2d_input(x.shape, torch.from_numpy(w), torch.from_numpy(gy))
    got = ck.conv_backward_input(gy, w, x.shape)
    assert np.isnan(got).any() and np.isinf(got).any()
    assert_close(got, expected.numpy(), np.float64)  # NaN and inf at the same places


@pytest.mark.torch
@pytest.mark.parametrize("batch", [1, 32])
def test_dense_layer_trains_like_torch_linear(batch, torch):
    rng = np.random.default_rng(batch)
    layer = ck.Dense(300, 70, activation="relu", dtype=np.float64, rng=0)
    x = rng.standard_normal((batch, 300))
    gy = rng.standard_normal((batch, 70))
    lin = torch.nn.Linear(300, 70).double()
    with torch.no_grad():
        lin.weight.copy_(torch.from_numpy(layer.params["weight"]))
        lin.bias.copy_(torch.from_numpy(layer.params["bias"]))
    xt = torch.from_numpy(x).requires_grad_(True)
    yt = torch.relu(lin(xt))
    yt.backward(torch.from_numpy(gy))
    assert_close(layer.forward(x), yt.detach().numpy(), np.float64)
    gx = layer.backward(gy)
    assert_close(gx, xt.grad.numpy(), np.float64)
    assert_close(layer.grads["weight"], lin.weight.grad.numpy(), np.float64)
    assert_close(layer.grads["bias"], lin.bias.grad.numpy(), np.float64)
