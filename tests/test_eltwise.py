"""The activation kernels (src/_eltwise.pyx through convkern/_activations.py).

- Backward: ``grad_z`` has exactly the bits of the NumPy expressions the layers used
  (``np.where(y > 0, g, 0)``, ``g * y * (1 - y)``, ``g * (1 - y * y)``), and the fused
  bias gradient exactly the bits of ``conv_backward_bias(grad_z)`` (the same double sums
  in the same order), tied and untied.
- Forward: ReLU has the bits of ``np.maximum(z, 0)`` and tanh is ``np.tanh``; the
  sigmoid uses its own exp in float32 (src/eltwise_math.h) and the C library's in
  float64, where NumPy has its own vector code, so it is compared with a float64
  evaluation within FORWARD_ULPS units of the dtype's epsilon (relative), over the whole
  range and at the edges (a float32 sigmoid below the smallest normal float may be 0).
- Against PyTorch autograd (conftest tolerance), with exact zeros in z so that the
  ReLU derivative at 0 is checked (PyTorch: 0).
- The same bits for 1, 2 and 4 threads.
"""

import numpy as np
import pytest
from conftest import DTYPES, assert_close

import convkern as ck
from convkern._activations import activation_backward, activation_forward

NAMES = ["relu", "sigmoid", "tanh"]
# The exp is within 1 ulp (2 in float32); the sigmoid adds a division and a product.
FORWARD_ULPS = 4
# (N, F, *O): P = 1 (a Dense layer), P < 16 lanes, P across a 1024-position row block,
# P over the 256-position untied block, and a 3-D output.
SHAPES = [(5, 7), (3, 4, 5), (2, 3, 33, 37), (2, 2, 300), (2, 3, 4, 5, 6)]


def make_z(shape, dtype, rng):
    z = (3 * rng.standard_normal(shape)).astype(dtype)
    z.flat[::7] = 0  # the ReLU kink
    return z


def numpy_forward(z, name):
    z64 = z.astype(np.float64)
    if name == "relu":
        return np.maximum(z, 0)
    if name == "sigmoid":
        e = np.exp(-np.abs(z64))
        return np.where(z64 >= 0, 1 / (1 + e), e / (1 + e))
    return np.tanh(z64)


def numpy_backward(g, y, name):
    if name == "relu":
        return np.where(y > 0, g, 0)
    if name == "sigmoid":
        return g * y * (1 - y)
    return g * (1 - y * y)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_forward_matches_numpy(shape, name, dtype, rng):
    z = make_z(shape, dtype, rng)
    y = activation_forward(z, name)
    expected = numpy_forward(z, name)
    if name == "relu":
        np.testing.assert_array_equal(y, expected)
    elif name == "tanh":
        np.testing.assert_array_equal(y, np.tanh(z))
    else:
        np.testing.assert_allclose(y, expected, rtol=FORWARD_ULPS * np.finfo(dtype).eps,
                                   atol=0)
    in_place = z.copy()
    assert activation_forward(in_place, name, out=in_place) is in_place
    np.testing.assert_array_equal(in_place, y)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ["sigmoid", "tanh"])
def test_forward_accuracy_over_the_whole_range(name, dtype):
    """Edges included: infinities, large and tiny values, the float32 exp's clamp."""
    edges = [np.inf, -np.inf, 0.0, -0.0, 88.0, -88.0, -87.0, -104.0, 1e-30, -1e-30, 0.625,
             -0.625, 9.0, -9.0, np.finfo(dtype).max, -np.finfo(dtype).max]
    z = np.concatenate([np.linspace(-100, 100, 400_001), np.logspace(-30, 2, 20_001),
                        -np.logspace(-30, 2, 20_001), edges]).astype(dtype)
    y = activation_forward(z, name)
    expected = numpy_forward(z, name)
    np.testing.assert_allclose(y, expected, rtol=FORWARD_ULPS * np.finfo(dtype).eps,
                               atol=np.finfo(dtype).tiny)
    nan = activation_forward(np.array([np.nan], dtype), name)
    assert np.isnan(nan).all()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("bias", [None, "tied", "untied"])
def test_backward_and_bias_have_the_unfused_bits(shape, name, dtype, bias, rng):
    y = activation_forward(make_z(shape, dtype, rng), name)
    g = rng.standard_normal(shape).astype(dtype)
    grad_z, grad_b = activation_backward(g, y, name, bias=bias)
    expected = numpy_backward(g, y, name)
    np.testing.assert_array_equal(grad_z, expected)
    if bias is None:
        assert grad_b is None
    else:
        flat = expected.reshape(*shape[:2], -1)
        want = ck.conv_backward_bias(flat, untied=bias == "untied")
        np.testing.assert_array_equal(grad_b.reshape(want.shape), want)
        assert grad_b.shape == ((shape[1],) if bias == "tied" else shape[1:])
    # In place over grad_y gives the same bits.
    assert activation_backward(g, y, name, out=g)[0] is g
    np.testing.assert_array_equal(g, expected)


@pytest.mark.torch
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", NAMES)
def test_forward_backward_and_bias_match_torch_autograd(name, dtype, rng):
    torch = pytest.importorskip("torch")
    z = make_z((3, 5, 6, 7), dtype, rng)
    g = rng.standard_normal(z.shape).astype(dtype)
    z_t = torch.tensor(z, requires_grad=True)
    y_t = getattr(torch, name)(z_t)
    y_t.backward(torch.from_numpy(g))
    y = activation_forward(z, name)
    grad_z, grad_b = activation_backward(g, y, name, bias="tied")
    assert_close(y, y_t.detach().numpy(), dtype, "y")
    assert_close(grad_z, z_t.grad.numpy(), dtype, "grad_z")
    assert_close(grad_b, z_t.grad.sum(dim=(0, 2, 3)).numpy(), dtype, "grad_b")
    if name == "relu":
        np.testing.assert_array_equal(grad_z[z == 0], 0)
        np.testing.assert_array_equal(grad_z, z_t.grad.numpy())


@pytest.fixture
def restore_threads():
    yield
    ck.set_num_threads(None)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("bias", [None, "tied", "untied"])
def test_same_bits_for_1_2_and_4_threads(bias, dtype, rng, restore_threads):
    # Over 4 x 250,000 elements, so that 4 threads really run (convkern._work).
    shape = (4, 32, 96, 96)
    z = make_z(shape, dtype, rng)
    g = rng.standard_normal(shape).astype(dtype)
    results = []
    for threads in (1, 2, 4):
        ck.set_num_threads(threads)
        y = activation_forward(z, "sigmoid")
        results.append((y, *activation_backward(g, y, "sigmoid", bias=bias)))
    for other in results[1:]:
        for a, b in zip(results[0], other, strict=True):
            np.testing.assert_array_equal(a, b)


def test_empty_batch_gives_a_zero_bias_gradient():
    y = np.zeros((0, 3, 4), np.float32)
    grad_z, grad_b = activation_backward(y, y.copy(), "relu", bias="tied",
                                         bias_out=np.full(3, np.nan, np.float32))
    assert grad_z.shape == (0, 3, 4)
    np.testing.assert_array_equal(grad_b, 0)


def test_bad_arguments():
    y = np.zeros((2, 3, 4), np.float32)
    with pytest.raises(TypeError, match="grad_y must be a numpy.ndarray"):
        activation_backward([[1.0]], y, "relu")
    with pytest.raises(TypeError, match="x must have dtype float32 or float64"):
        activation_forward(np.zeros(3, np.int32), "relu")
    with pytest.raises(TypeError, match="y has dtype float64 but grad_y has dtype float32"):
        activation_backward(y, y.astype(np.float64), "relu")
    with pytest.raises(ValueError, match="activation must be 'relu', 'sigmoid' or 'tanh'"):
        activation_forward(y, "gelu")
    with pytest.raises(ValueError, match="bias must be None, 'tied' or 'untied'"):
        activation_backward(y, y, "relu", bias=True)
    with pytest.raises(ValueError, match="y must have grad_y's shape"):
        activation_backward(y, y[:1], "relu")
    with pytest.raises(ValueError, match="out shares memory with an input"):
        activation_backward(y.copy(), y, "relu", out=y)
    with pytest.raises(ValueError, match=r"bias_out|out must have shape \(3,\)"):
        activation_backward(y, y.copy(), "relu", bias="tied", bias_out=np.zeros(4, np.float32))
    readonly = np.zeros((2, 3, 4), np.float32)
    readonly.flags.writeable = False
    with pytest.raises(ValueError, match="out is read-only"):
        activation_forward(y, "relu", out=readonly)
