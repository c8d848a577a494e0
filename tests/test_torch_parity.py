"""The conv and max-pool matrices against PyTorch: forward and every gradient.

``helper_test_op`` (in the spirit of tinygrad's test helper of the same name) runs one op
in convkern and in PyTorch on the same inputs, compares the forward results, then pushes
the same random grad_y through PyTorch autograd and through convkern's backward
functions and compares every gradient.

PyTorch correspondence (issue 2, section 2):
- conv: ``torch.nn.functional.conv{d}d`` on the explicitly zero-padded input
  (``F.pad``, which also covers asymmetric, 'same' and 'full' padding), the tied bias
  passed to conv, the untied bias added afterwards.
- max pool: ``torch.nn.functional.max_pool{d}d(..., return_indices=True)``; values and
  indices must be identical (ties and NaN included), the backward within tolerance.
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import reference as ref  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from conftest import DTYPES, assert_close  # noqa: E402
from test_conv import CONV_CASES, CONV_IDS, conv_kwargs, make_conv_inputs  # noqa: E402
from test_pool import DATA, POOL_CASES, POOL_IDS, make_pool_input, pool_kwargs  # noqa: E402

import convkern  # noqa: E402

pytestmark = pytest.mark.torch

# One torch thread: two OpenMP runtimes spinning on two shared cores only slow things down.
torch.set_num_threads(1)


def _to_torch(a, requires_grad):
    if a is None:
        return None
    return torch.from_numpy(np.array(a, copy=True)).requires_grad_(requires_grad)


def helper_test_op(inputs, convkern_forward, convkern_backward, torch_forward, dtype, rng,
                   exact=(), grads=None):
    """Run an op in convkern and in PyTorch and compare forward and backward.

    Parameters
    ----------
    inputs : dict of str -> ndarray or None
        The op's array arguments (None entries are passed through as None).
    convkern_forward : callable(**inputs) -> ndarray or tuple of ndarrays
    convkern_backward : callable(grad_y, forward_outputs) -> dict of str -> ndarray
        The gradient of sum(y * grad_y) with respect to each input named in the dict.
    torch_forward : callable(**tensors) -> tensor or tuple of tensors
    dtype : numpy dtype of every float input and output.
    exact : indices of forward outputs that must match bit for bit (max-pool values and
        indices); the others are compared with assert_close.
    grads : names of the inputs whose gradients are compared (default: all non-None).
    """
    grads = [k for k, v in inputs.items() if v is not None] if grads is None else grads
    tensors = {k: _to_torch(v, k in grads) for k, v in inputs.items()}

    ours = convkern_forward(**inputs)
    theirs = torch_forward(**tensors)
    ours_t = ours if isinstance(ours, tuple) else (ours,)
    theirs_t = theirs if isinstance(theirs, tuple) else (theirs,)
    assert len(ours_t) == len(theirs_t)
    for i, (a, b) in enumerate(zip(ours_t, theirs_t)):
        b = b.detach().numpy()
        if i in exact:
            assert a.dtype == b.dtype and a.shape == b.shape, (a.dtype, b.dtype, a.shape, b.shape)
            np.testing.assert_array_equal(a, b, err_msg=f"forward output {i}")
        else:
            assert_close(a, b.astype(np.float64), dtype, f"forward output {i}")

    grad_y = rng.standard_normal(ours_t[0].shape).astype(dtype)
    theirs_t[0].backward(torch.from_numpy(grad_y.copy()))
    ours_grads = convkern_backward(grad_y, ours)
    assert set(ours_grads) == set(grads)
    for name in grads:
        expected = tensors[name].grad
        assert expected is not None, name
        assert_close(ours_grads[name], expected.numpy().astype(np.float64), dtype,
                     f"gradient of {name}")


# --------------------------------------------------------------------------------------
# Convolution
# --------------------------------------------------------------------------------------

TORCH_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
TORCH_POOL = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}


def _torch_pad(case, x_shape, w_shape):
    """The case's padding as F.pad's flat list (last axis first)."""
    d = case["d"]
    pairs = ref.resolve_conv_padding(case["padding"], tuple(x_shape[-d:]), tuple(w_shape[2:]),
                                     ref._tuple(case["stride"], d),
                                     ref._tuple(case["dilation"], d))
    return [v for pair in reversed(pairs) for v in pair]


def _run_conv(case, dtype, rng, unbatched=False):
    x, w, b, _ = make_conv_inputs(case, dtype, rng, unbatched=unbatched)
    kw = conv_kwargs(case)
    untied = case["bias"] == "untied"
    pad = _torch_pad(case, x.shape, w.shape)
    conv = TORCH_CONV[case["d"]]

    def torch_forward(x, w, b):
        xt = x if not unbatched else x[None]
        y = conv(F.pad(xt, pad), w, None if (b is None or untied) else b,
                 stride=case["stride"], dilation=case["dilation"], groups=case["groups"])
        if b is not None and untied:
            y = y + b
        return y if not unbatched else y[0]

    def convkern_forward(x, w, b):
        return convkern.conv_forward(x, w, b, **kw)

    def convkern_backward(grad_y, y):
        grads = {
            "x": convkern.conv_backward_input(grad_y, w, x.shape, **kw),
            "w": convkern.conv_backward_weight(x, grad_y, w.shape, **kw),
        }
        if b is not None:
            gy = grad_y if not unbatched else grad_y[None]
            grads["b"] = convkern.conv_backward_bias(gy, untied=untied)
        return grads

    helper_test_op(dict(x=x, w=w, b=b), convkern_forward, convkern_backward, torch_forward,
                   dtype, rng)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CONV_CASES, ids=CONV_IDS)
def test_conv_matches_torch(case, dtype, rng):
    _run_conv(case, dtype, rng)


@pytest.mark.parametrize("case", CONV_CASES[::6], ids=CONV_IDS[::6])
def test_conv_unbatched_matches_torch(case, rng):
    _run_conv(case, np.float32, rng, unbatched=True)


def test_torch_same_padding_agrees_with_ours(rng):
    # PyTorch's own padding='same' (stride 1) splits the total padding the same way.
    x = rng.standard_normal((2, 3, 10, 9))
    w = rng.standard_normal((4, 3, 4, 3))
    y = convkern.conv_forward(x, w, padding="same", dilation=(1, 2))
    yt = F.conv2d(torch.from_numpy(x), torch.from_numpy(w), padding="same", dilation=(1, 2))
    assert_close(y, yt.numpy(), np.float64)


# --------------------------------------------------------------------------------------
# Max pooling
# --------------------------------------------------------------------------------------


def _run_pool(case, dtype, data, rng):
    x = make_pool_input(case, dtype, data, rng)
    kw = pool_kwargs(case)
    stride = case["stride"] if case["stride"] is not None else case["kernel"]
    pool = TORCH_POOL[case["d"]]

    def torch_forward(x):
        return pool(x, case["kernel"], stride=stride, padding=case["padding"],
                    dilation=case["dilation"], ceil_mode=case["ceil_mode"], return_indices=True)

    def convkern_forward(x):
        return convkern.maxpool_forward(x, case["kernel"], **kw)

    def convkern_backward(grad_y, outputs):
        return {"x": convkern.maxpool_backward(grad_y, outputs[1], x.shape)}

    helper_test_op(dict(x=x), convkern_forward, convkern_backward, torch_forward, dtype, rng,
                   exact=(0, 1))


@pytest.mark.parametrize("data", DATA)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", POOL_CASES, ids=POOL_IDS)
def test_maxpool_matches_torch(case, dtype, data, rng):
    _run_pool(case, dtype, data, rng)


@pytest.mark.parametrize("dtype", DTYPES)
def test_maxpool_nan_and_ties_examples(dtype):
    # Hand-made windows: ties keep the first maximum, the last NaN of a window wins,
    # an all -inf window reports its first in-bounds element.
    x = np.array([[[[1, 3, 3, 2],
                    [3, np.nan, 0, np.nan],
                    [-np.inf, -np.inf, 5, 5],
                    [-np.inf, -np.inf, 5, 4]]]], dtype=dtype)
    for kw in (dict(kernel_size=2), dict(kernel_size=2, stride=1),
               dict(kernel_size=3, stride=1, padding=1)):
        y, idx = convkern.maxpool_forward(x, **kw)
        yt, it = F.max_pool2d(torch.from_numpy(x), return_indices=True, **kw)
        np.testing.assert_array_equal(y, yt.numpy())
        np.testing.assert_array_equal(idx, it.numpy())


@pytest.mark.parametrize("dtype", DTYPES)
def test_maxpool_window_without_input_elements_is_refused(dtype):
    # Kernel 2 with dilation 3 and padding 1 over 2 samples: the only window covers the
    # positions -1 and 2, both outside. PyTorch reports -inf and an index outside the
    # plane that no backward pass can use; convkern refuses the configuration instead.
    x = np.arange(4, dtype=dtype).reshape(1, 1, 2, 2)
    yt, it = F.max_pool2d(torch.from_numpy(x), 2, stride=1, padding=1, dilation=3,
                          return_indices=True)
    assert np.isneginf(yt.numpy()).all() and (it.numpy() >= x[0, 0].size).all()
    with pytest.raises(ValueError, match="covers only padding"):
        convkern.maxpool_forward(x, 2, stride=1, padding=1, dilation=3)
