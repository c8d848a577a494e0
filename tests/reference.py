"""Slow, obviously-correct float64 NumPy reference for convkern's kernels.

Nothing here imports convkern: the padding rules, output sizes and the max-pool scan
order are written out again from the specification (issue 2, section 2), so a mistake in
convkern's own parser cannot hide in both sides of a comparison.

Every function computes in float64 whatever the input dtype and returns float64 (and
int64 indices); tests cast or compare with dtype-aware tolerances (see conftest.py).

Conventions (as PyTorch):

- ``x`` is ``(N, C, *S)`` or unbatched ``(C, *S)``; ``weight`` is ``(F, C // groups, *K)``;
  ``d = weight.ndim - 2``.
- Cross-correlation: ``y[n, f, o] = sum_{c, k} xpad[n, g*Cg + c, o*s + k*dil] * w[f, c, k]``
  where ``g = f // (F // groups)``.

The conv loops run over kernel offsets (a handful per case) and use NumPy over batch,
channel and output positions; the max-pool loop runs over window offsets in scan order,
which is exactly the order in which PyTorch visits the elements of each window.
"""

import itertools
import math

import numpy as np

__all__ = [
    "resolve_conv_padding",
    "resolve_pool_padding",
    "conv_out_size",
    "conv_output_spatial",
    "pool_out_size",
    "conv_forward",
    "conv_backward_input",
    "conv_backward_weight",
    "conv_backward_bias",
    "conv_transpose",
    "maxpool_forward",
    "maxpool_backward",
    "pad_zeros",
]


# --------------------------------------------------------------------------------------
# Parameter normalisation (re-implemented from the spec, independent of convkern)
# --------------------------------------------------------------------------------------


def _tuple(value, d):
    """An int or a d-sequence of ints -> a d-tuple of Python ints."""
    if isinstance(value, (int, np.integer)):
        return (int(value),) * d
    value = tuple(int(v) for v in value)
    assert len(value) == d, (value, d)
    return value


def conv_out_size(size, kernel, stride, dilation, before, after):
    """floor((S + before + after - dil*(K-1) - 1) / s) + 1 for one axis."""
    return (size + before + after - dilation * (kernel - 1) - 1) // stride + 1


def resolve_conv_padding(padding, in_spatial, kernel, stride, dilation):
    """Return the padding as a d-tuple of (before, after) pairs.

    Forms: int; d-tuple of ints (symmetric); d-tuple of (before, after) pairs;
    'valid'; 'same' (output ceil(S/s), total max((O-1)*s + (K-1)*dil + 1 - S, 0), the
    odd one after); 'full' ((K-1)*dil on both sides).
    """
    d = len(in_spatial)
    stride = _tuple(stride, d)
    dilation = _tuple(dilation, d)
    if isinstance(padding, str):
        if padding == "valid":
            return ((0, 0),) * d
        if padding == "full":
            return tuple(((k - 1) * dl, (k - 1) * dl) for k, dl in zip(kernel, dilation))
        if padding == "same":
            pairs = []
            for S, k, s, dl in zip(in_spatial, kernel, stride, dilation):
                out = -(-S // s)  # ceil(S / s)
                total = max((out - 1) * s + (k - 1) * dl + 1 - S, 0)
                pairs.append((total // 2, total - total // 2))
            return tuple(pairs)
        raise AssertionError(f"unknown padding {padding!r}")
    if isinstance(padding, (int, np.integer)):
        return ((int(padding), int(padding)),) * d
    padding = tuple(padding)
    assert len(padding) == d
    pairs = []
    for p in padding:
        if isinstance(p, (int, np.integer)):
            pairs.append((int(p), int(p)))
        else:
            before, after = p
            pairs.append((int(before), int(after)))
    return tuple(pairs)


def pad_zeros(x, pairs):
    """Zero-pad the trailing len(pairs) axes of x (float64 copy)."""
    x = np.asarray(x, dtype=np.float64)
    lead = [(0, 0)] * (x.ndim - len(pairs))
    return np.pad(x, lead + [tuple(p) for p in pairs], mode="constant")


def _batched(x, d):
    """Return (x with a batch axis, was_unbatched)."""
    x = np.asarray(x)
    if x.ndim == d + 1:
        return x[None], True
    assert x.ndim == d + 2, (x.shape, d)
    return x, False


def _window_slices(kidx, dilation, stride, out_spatial):
    """Slices of the padded input seen by kernel offset kidx at every output position."""
    return tuple(
        slice(k * dl, k * dl + (o - 1) * s + 1, s)
        for k, dl, s, o in zip(kidx, dilation, stride, out_spatial)
    )


def _conv_geometry(x_shape, w_shape, stride, padding, dilation):
    d = len(w_shape) - 2
    in_spatial = tuple(x_shape[-d:])
    kernel = tuple(w_shape[2:])
    stride = _tuple(stride, d)
    dilation = _tuple(dilation, d)
    pads = resolve_conv_padding(padding, in_spatial, kernel, stride, dilation)
    out = tuple(
        conv_out_size(S, k, s, dl, b, a)
        for S, k, s, dl, (b, a) in zip(in_spatial, kernel, stride, dilation, pads)
    )
    assert all(o >= 1 for o in out), out
    return d, in_spatial, kernel, stride, dilation, pads, out


def conv_output_spatial(x_shape, w_shape, stride=1, padding=0, dilation=1, groups=1):
    """The output spatial shape O of a convolution (asserts every O >= 1; groups unused)."""
    return _conv_geometry(tuple(x_shape), tuple(w_shape), stride, padding, dilation)[-1]


# --------------------------------------------------------------------------------------
# Convolution
# --------------------------------------------------------------------------------------


def conv_forward(x, weight, bias=None, *, stride=1, padding=0, dilation=1, groups=1):
    """Reference forward convolution (float64). Bias None, (F,) or (F, *O)."""
    weight = np.asarray(weight, dtype=np.float64)
    d, _, kernel, stride, dilation, pads, out = _conv_geometry(
        np.shape(x), weight.shape, stride, padding, dilation
    )
    xb, unbatched = _batched(x, d)
    xp = pad_zeros(xb, pads)
    N, C = xp.shape[:2]
    F = weight.shape[0]
    Cg, Fg = C // groups, F // groups
    assert weight.shape[1] == Cg
    y = np.zeros((N, F) + out, dtype=np.float64)
    for kidx in itertools.product(*(range(k) for k in kernel)):
        sl = _window_slices(kidx, dilation, stride, out)
        for g in range(groups):
            xs = xp[(slice(None), slice(g * Cg, (g + 1) * Cg)) + sl]  # (N, Cg, *O)
            wk = weight[(slice(g * Fg, (g + 1) * Fg), slice(None)) + kidx]  # (Fg, Cg)
            # y[n, f, o] += sum_c wk[f, c] * xs[n, c, o]
            y[:, g * Fg:(g + 1) * Fg] += np.einsum("fc,nc...->nf...", wk, xs)
    if bias is not None:
        bias = np.asarray(bias, dtype=np.float64)
        if bias.ndim == 1:
            y += bias.reshape((1, F) + (1,) * d)
        else:
            assert bias.shape == (F,) + out, (bias.shape, out)
            y += bias[None]
    return y[0] if unbatched else y


def conv_transpose(x, weight, bias=None, *, stride=1, padding=0, output_padding=0,
                   dilation=1, groups=1):
    """Reference transposed convolution (PyTorch's conv_transpose{d}d), float64, by scatter.

    Input position i and tap k add ``x[i] * w[k]`` to position ``i * s + k * dil`` of the
    full output; the result is positions ``p .. p + O - 1`` of it, with
    ``O = (S - 1) * s - 2 p + dil * (K - 1) + output_padding + 1`` (zeros past the full
    output).  Weight ``(C, F // groups, *K)``; bias None or ``(F,)``.
    """
    weight = np.asarray(weight, dtype=np.float64)
    d = weight.ndim - 2
    xb, unbatched = _batched(x, d)
    xb = xb.astype(np.float64)
    stride, padding, output_padding, dilation = (
        _tuple(v, d) for v in (stride, padding, output_padding, dilation))
    N, C = xb.shape[:2]
    S, K = xb.shape[2:], weight.shape[2:]
    Cg, Fg = C // groups, weight.shape[1]
    out = tuple((s - 1) * st - 2 * p + dl * (k - 1) + op + 1
                for s, st, p, dl, k, op in zip(S, stride, padding, dilation, K, output_padding))
    assert min(out) >= 1, out
    full = tuple(max((s - 1) * st + dl * (k - 1) + 1, p + o)
                 for s, st, dl, k, p, o in zip(S, stride, dilation, K, padding, out))
    y = np.zeros((N, Fg * groups) + full)
    for kidx in itertools.product(*(range(k) for k in K)):
        sl = tuple(slice(k * dl, k * dl + (s - 1) * st + 1, st)
                   for k, dl, s, st in zip(kidx, dilation, S, stride))
        for g in range(groups):
            xs = xb[:, g * Cg:(g + 1) * Cg]  # (N, Cg, *S)
            wk = weight[(slice(g * Cg, (g + 1) * Cg), slice(None)) + kidx]  # (Cg, Fg)
            y[(slice(None), slice(g * Fg, (g + 1) * Fg)) + sl] += np.einsum("cf,nc...->nf...", wk, xs)
    y = y[(slice(None), slice(None)) + tuple(slice(p, p + o) for p, o in zip(padding, out))]
    if bias is not None:
        y = y + np.asarray(bias, dtype=np.float64).reshape((1, -1) + (1,) * d)
    return y[0] if unbatched else y


def conv_backward_input(grad_y, weight, x_shape, *, stride=1, padding=0, dilation=1,
                        groups=1):
    """Reference d(sum(y * grad_y))/dx: scatter grad_y back through every kernel offset."""
    weight = np.asarray(weight, dtype=np.float64)
    x_shape = tuple(x_shape)
    d, in_spatial, kernel, stride, dilation, pads, out = _conv_geometry(
        x_shape, weight.shape, stride, padding, dilation
    )
    gb, unbatched = _batched(np.asarray(grad_y, dtype=np.float64), d)
    N = gb.shape[0]
    C = x_shape[-d - 1]
    F = weight.shape[0]
    Cg, Fg = C // groups, F // groups
    assert gb.shape[1:] == (F,) + out, (gb.shape, out)
    padded = tuple(S + b + a for S, (b, a) in zip(in_spatial, pads))
    gxp = np.zeros((N, C) + padded, dtype=np.float64)
    for kidx in itertools.product(*(range(k) for k in kernel)):
        sl = _window_slices(kidx, dilation, stride, out)
        for g in range(groups):
            gs = gb[:, g * Fg:(g + 1) * Fg]  # (N, Fg, *O)
            wk = weight[(slice(g * Fg, (g + 1) * Fg), slice(None)) + kidx]  # (Fg, Cg)
            # Within one kernel offset the strided slice has no repeated positions,
            # so += on the view accumulates correctly.
            gxp[(slice(None), slice(g * Cg, (g + 1) * Cg)) + sl] += np.einsum(
                "fc,nf...->nc...", wk, gs
            )
    crop = tuple(slice(b, b + S) for S, (b, _) in zip(in_spatial, pads))
    gx = gxp[(slice(None), slice(None)) + crop]
    return gx[0] if unbatched else gx


def conv_backward_weight(x, grad_y, weight_shape, *, stride=1, padding=0, dilation=1,
                         groups=1):
    """Reference d(sum(y * grad_y))/dw: correlate the padded input with grad_y."""
    weight_shape = tuple(weight_shape)
    d, _, kernel, stride, dilation, pads, out = _conv_geometry(
        np.shape(x), weight_shape, stride, padding, dilation
    )
    xb, unbatched = _batched(x, d)
    gb = np.asarray(grad_y, dtype=np.float64)
    if unbatched:
        gb = gb[None]
    xp = pad_zeros(xb, pads)
    C = xp.shape[1]
    F = weight_shape[0]
    Cg, Fg = C // groups, F // groups
    gw = np.zeros(weight_shape, dtype=np.float64)
    for kidx in itertools.product(*(range(k) for k in kernel)):
        sl = _window_slices(kidx, dilation, stride, out)
        for g in range(groups):
            xs = xp[(slice(None), slice(g * Cg, (g + 1) * Cg)) + sl]  # (N, Cg, *O)
            gs = gb[:, g * Fg:(g + 1) * Fg]  # (N, Fg, *O)
            n = gs.shape[0]
            gw[(slice(g * Fg, (g + 1) * Fg), slice(None)) + kidx] = np.einsum(
                "nfp,ncp->fc", gs.reshape(n, Fg, -1), xs.reshape(n, Cg, -1)
            )
    return gw


def conv_backward_bias(grad_y, *, untied=False):
    """Reference bias gradient of a batched grad_y (N, F, *O): sum over the batch (and
    over the positions unless untied)."""
    g = np.asarray(grad_y, dtype=np.float64)
    if untied:
        return g.sum(axis=0)
    return g.sum(axis=(0,) + tuple(range(2, g.ndim)))


# --------------------------------------------------------------------------------------
# Max pooling
# --------------------------------------------------------------------------------------


def resolve_pool_padding(padding, in_spatial, kernel, stride, dilation):
    """Pool padding as a d-tuple of (before, after) pairs, in the forms of convolution's."""
    return resolve_conv_padding(padding, in_spatial, kernel, stride, dilation)


def pool_out_size(size, kernel, stride, padding, dilation, ceil_mode):
    """PyTorch's pooling output size for one axis; ``padding`` is an int or a
    (before, after) pair."""
    before, after = (padding, padding) if isinstance(padding, (int, np.integer)) else padding
    num = size + before + after - dilation * (kernel - 1) - 1
    if ceil_mode:
        out = -(-num // stride) + 1
        # The last window must start inside the input or the padding before it.
        if (out - 1) * stride >= size + before:
            out -= 1
    else:
        out = num // stride + 1
    return out


def maxpool_forward(x, kernel_size, *, stride=None, padding=0, dilation=1,
                    ceil_mode=False):
    """Reference max pool returning (y float64, indices int64) as PyTorch does.

    For each window the running max starts at -inf with the index of the window's first
    in-bounds element; elements are visited in scan order (row-major over the window) and
    replace the running max when ``val > maxval or isnan(val)``. So ties keep the first
    maximum and the last NaN of a window wins. Padding never takes part (implicit -inf).
    Indices are flattened within each (n, c) plane of the unpadded input.
    """
    x = np.asarray(x)
    if isinstance(kernel_size, (int, np.integer)):
        d = x.ndim - 2
    else:
        d = len(kernel_size)
    kernel = _tuple(kernel_size, d)
    stride = kernel if stride is None else _tuple(stride, d)
    dilation = _tuple(dilation, d)
    xb, unbatched = _batched(x, d)
    pads = resolve_pool_padding(padding, xb.shape[2:], kernel, stride, dilation)
    xb = xb.astype(np.float64)
    N, C = xb.shape[:2]
    in_spatial = xb.shape[2:]
    out = tuple(
        pool_out_size(S, k, s, p, dl, ceil_mode)
        for S, k, s, p, dl in zip(in_spatial, kernel, stride, pads, dilation)
    )
    assert all(o >= 1 for o in out), out
    plane_strides = [int(np.prod(in_spatial[a + 1:], dtype=np.int64)) for a in range(d)]

    # Per axis: the input coordinate of window element k at output o, and the first
    # in-bounds coordinate of each window (PyTorch: start = o*s - p; while start < 0:
    # start += dil).
    starts = [np.arange(o) * s - p for o, s, (p, _) in zip(out, stride, pads)]
    first = []
    for st, dl in zip(starts, dilation):
        f = st.copy()
        neg = f < 0
        f[neg] = f[neg] + (-f[neg] + dl - 1) // dl * dl
        first.append(f)
    grids = np.meshgrid(*first, indexing="ij")
    init_index = sum(g * ps for g, ps in zip(grids, plane_strides))
    maxval = np.full((N, C) + out, -np.inf)
    index = np.broadcast_to(init_index, (N, C) + out).astype(np.int64).copy()

    for kidx in itertools.product(*(range(k) for k in kernel)):
        coords = [st + k * dl for st, k, dl in zip(starts, kidx, dilation)]
        inb = [(c >= 0) & (c < S) for c, S in zip(coords, in_spatial)]
        mask = np.ones(out, dtype=bool)
        for a in range(d):
            shape = [1] * d
            shape[a] = out[a]
            mask = mask & inb[a].reshape(shape)
        if not mask.any():
            continue
        clipped = [np.clip(c, 0, S - 1) for c, S in zip(coords, in_spatial)]
        cg = np.meshgrid(*clipped, indexing="ij")
        flat = sum(g * ps for g, ps in zip(cg, plane_strides))
        val = xb.reshape(N, C, -1)[:, :, flat.reshape(-1)].reshape((N, C) + out)
        take = mask & ((val > maxval) | np.isnan(val))
        maxval = np.where(take, val, maxval)
        index = np.where(take, np.broadcast_to(flat, index.shape), index)
    if unbatched:
        return maxval[0], index[0]
    return maxval, index


def maxpool_backward(grad_y, indices, x_shape, d):
    """Reference max-pool backward: scatter-add grad_y into each (n, c) plane at indices.

    ``d`` (the number of spatial axes) is explicit because ``(C, H, W)`` could be an
    unbatched 2-D input or a batched 1-D one.
    """
    x_shape = tuple(x_shape)
    g = np.asarray(grad_y, dtype=np.float64)
    idx = np.asarray(indices)
    assert idx.shape == g.shape and idx.dtype == np.int64
    lead = x_shape[:-d]
    plane = math.prod(x_shape[-d:])
    gp = g.reshape((math.prod(lead), -1))
    ip = idx.reshape((math.prod(lead), -1))
    gx = np.zeros((math.prod(lead), plane), dtype=np.float64)
    for row in range(gp.shape[0]):
        np.add.at(gx[row], ip[row], gp[row])  # overlapping windows accumulate
    return gx.reshape(x_shape)


def numerical_gradient(loss, a, h):
    """Central differences of loss() with respect to every element of ``a`` (in place).

    Parameters
    ----------
    loss : callable
        Returns a float computed from the current contents of ``a``.
    a : ndarray
        Perturbed element by element and restored.
    h : float
        Step of the central difference.

    Returns
    -------
    ndarray of float64, shape of ``a``
    """
    grad = np.zeros(a.shape, dtype=np.float64)
    flat, gflat = a.reshape(-1), grad.reshape(-1)
    assert np.shares_memory(flat, a)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + h
        up = loss()
        flat[i] = old - h
        down = loss()
        flat[i] = old
        gflat[i] = (up - down) / (2 * h)
    return grad
