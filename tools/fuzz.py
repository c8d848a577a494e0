#!/usr/bin/env python3
"""Fuzz every public function of convkern; count calls and crashes.

Usage::

    python tools/fuzz.py --calls 100000            # the documented long run
    python tools/fuzz.py --calls 2000 --seed 1     # a short, reproducible run
    python tools/fuzz.py --replay 1:1234           # rerun call 1234 of seed 1 in-process

Every call is generated from ``numpy.random.default_rng([seed, index])``, so a
``seed:index`` pair reproduces it exactly.  Calls run in batches, each batch in a child
``sys.executable`` process (``--child``), so a segfault or a hang kills one child, not the
fuzzer.  A batch whose child dies is rerun with a trace file to find the call that
killed it; the fuzzer then continues after that call.

The calls: random shapes, dtypes (float32/float64 and wrong ones), layouts
(non-contiguous, Fortran, negative strides, read-only, zero strides, unaligned),
parameter values (huge, negative, zero, bool, float, None, strings, numpy scalars),
extreme geometries (paddings and strides near 2**63), forged max-pool indices,
mismatched gradient shapes and ``out=`` arrays that alias an input, are read-only,
wrongly shaped or typed, at every public function.  Valid and invalid calls are mixed:
a valid configuration is built first and then 0 to 3 mutations are applied.

Outcomes of one call:

- ok, or a TypeError / ValueError / MemoryError (a refusal): fine.
- crash: the child is killed by a signal, hangs past ``--timeout``, exits without a
  summary, or the call raises any other exception (OverflowError, IndexError,
  SystemError, ...).
- violation: a call that succeeded but modified an input, returned an output of the
  wrong dtype, gave different bits when repeated with another thread count or into a
  garbage-filled ``out``, or (small cases) disagreed with the float64 reference of
  tests/reference.py.
- note: a refusal raised from inside a compiled module (a Cython buffer error, say)
  instead of by the Python face's validation; reported, not counted as a crash.

The exit status is 0 only when there are no crashes and no violations.

Every call runs on the thread count the fuzzer picked (1 to 4; convkern's own rule of
fewer threads for small calls is switched off in the child, ``--natural-threads`` keeps
it), and a few percent of the convolutions are medium-sized (several tiles per image),
so that a data race shows up as "different bits" between thread counts.

The child limits its address space (``--mem-limit-mb``, default 4096) so that an absurd
but representable size fails with MemoryError instead of swapping; under AddressSanitizer
(``LD_PRELOAD`` names libasan) the limit is off and the sizes that could fit in memory
are left out of the "huge" values.
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import warnings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SUMMARY_TAG = "FUZZ-SUMMARY "
EXPECTED = (TypeError, ValueError, MemoryError)
UNDER_ASAN = "asan" in os.environ.get("LD_PRELOAD", "")


# ======================================================================================
# Call generation (child side; numpy and convkern are imported lazily)
# ======================================================================================

class Call:
    """One generated call: ``fn(*args, **kwargs)`` plus what the checks need."""

    def __init__(self, name, args, kwargs, kind):
        self.name = name
        self.args = list(args)
        self.kwargs = dict(kwargs)
        self.kind = kind              # generator that built it
        self.mutations = []           # names of the mutations applied
        self.threads = None           # set_num_threads value before the call
        self.ref_ok = True            # still a plain configuration the reference can check
        self.d = None                 # spatial dims (for maxpool_backward's reference)

    def describe(self):
        def show(v):
            import numpy as np
            if isinstance(v, np.ndarray):
                flags = []
                if not v.flags.c_contiguous:
                    flags.append("noncontig")
                if not v.flags.writeable:
                    flags.append("readonly")
                if not v.flags.aligned:
                    flags.append("unaligned")
                return (f"{type(v).__name__}(shape={v.shape}, dtype={v.dtype.str}, "
                        f"strides={v.strides}{', ' + ','.join(flags) if flags else ''})")
            r = repr(v)
            return r if len(r) <= 120 else r[:117] + "..."
        parts = [show(a) for a in self.args] + [f"{k}={show(v)}" for k, v in self.kwargs.items()]
        return (f"set_num_threads({self.threads}); {self.name}({', '.join(parts)})  "
                f"[{self.kind}; mutations: {', '.join(self.mutations) or 'none'}]")


def _weird_ints():
    ints = [0, -1, -2, -7, 2**62, 2**62 + 1, 2**63 - 1, 2**63, 2**64, 2**70, -2**63,
            -2**63 - 1, 2**40, 2**41]
    if not UNDER_ASAN:
        # Sizes that may fit in memory: only safe with the child's address-space limit.
        ints += [2**31 - 1, 2**31, 2**32 - 1, 2**32]
    return ints


class Gen:
    """Random values for one call, from ``default_rng([seed, index])``."""

    def __init__(self, np, rng):
        self.np = np
        self.rng = rng
        self.weird_ints = _weird_ints()

    # ---- scalars ----------------------------------------------------------------------
    def chance(self, p):
        return self.rng.random() < p

    def pick(self, seq):
        return seq[int(self.rng.integers(len(seq)))]

    def small(self, lo, hi):
        return int(self.rng.integers(lo, hi + 1))

    def weird(self):
        """A value that is wrong (or extreme) for an int-like parameter."""
        np = self.np
        r = self.rng.random()
        if r < 0.55:
            return self.pick(self.weird_ints)
        others = [True, False, 1.0, 2.5, -0.0, float("nan"), float("inf"), None, "same",
                  "valid", "full", "bogus", "", [], (), [1], (1, 2, 3, 4), ((1, 2, 3),),
                  ((1, -1),), ((0, 2**63),), ((2**62, 2**62),), np.int64(2),
                  np.int8(-1), np.uint64(2**63), np.uint8(3), np.float64(2.0),
                  np.bool_(True), np.array(2), np.array([1, 2]), np.array(2.0), object(),
                  1j, b"1", {1: 2}, range(2), np.int32(2**31 - 1)]
        return self.pick(others)

    # ---- arrays -----------------------------------------------------------------------
    def values(self, shape, dtype):
        """Random values; sometimes with NaN, Inf, huge or subnormal entries."""
        np = self.np
        size = 1
        for s in shape:
            size *= s
        if np.dtype(dtype).kind != "f":
            return self.rng.integers(-3, 40, size).astype(dtype).reshape(shape)
        a = self.rng.standard_normal(size).astype(dtype)
        if size and self.chance(0.15):
            specials = [np.nan, np.inf, -np.inf, 0.0, -0.0, np.finfo(dtype).max,
                        np.finfo(dtype).tiny / 4, 1e30]
            k = self.small(1, max(1, size // 4))
            where = self.rng.integers(0, size, k)
            a[where] = np.array([self.pick(specials) for _ in range(k)], dtype=dtype)
        if size and self.chance(0.1):
            a[:] = self.pick([0.0, 1.0, np.nan])  # all equal: ties everywhere
        return a.reshape(shape)

    def layout(self, a):
        """The same values in a random memory layout (or as is)."""
        np = self.np
        kind = self.pick(["c"] * 6 + ["fortran", "strided", "negative", "readonly",
                                      "broadcast", "unaligned", "transposed-copy"])
        if a.ndim == 0:
            return a
        if kind == "fortran":
            return np.asfortranarray(a)
        if kind == "strided":
            big = np.full(tuple(2 * s + 1 for s in a.shape), np.nan, dtype=a.dtype)
            v = big[tuple(slice(1, None, 2) for _ in a.shape)]
            v[...] = a
            return v
        if kind == "negative":
            f = np.ascontiguousarray(a[tuple(slice(None, None, -1) for _ in a.shape)])
            return f[tuple(slice(None, None, -1) for _ in a.shape)]
        if kind == "readonly":
            b = a.copy()
            b.flags.writeable = False
            return b
        if kind == "broadcast":
            # zero strides along the axes of length > 1 that we collapse to one value
            src = a[tuple(slice(0, 1) if self.chance(0.5) else slice(None) for _ in a.shape)]
            return np.broadcast_to(src, a.shape)
        if kind == "unaligned":
            buf = np.empty(a.nbytes + a.itemsize, dtype=np.uint8)
            v = buf[1:1 + a.nbytes].view(a.dtype).reshape(a.shape)
            v[...] = a
            return v
        if kind == "transposed-copy" and a.ndim >= 2:
            return np.ascontiguousarray(np.swapaxes(a, 0, -1)).swapaxes(0, -1)
        return a

    def array(self, shape, dtype):
        return self.layout(self.values(shape, dtype))

    def dtype(self):
        np = self.np
        return self.pick([np.float32, np.float64])

    def bad_array(self, a):
        """Replace a good array by a wrong kind of thing."""
        np = self.np
        choices = [
            lambda: a.tolist(),
            lambda: None,
            lambda: 1.0,
            lambda: np.float64(1.0),
            lambda: np.array(1.0, dtype=a.dtype),
            lambda: a.astype(np.int32),
            lambda: a.astype(np.int64),
            lambda: a.astype(np.bool_),
            lambda: a.astype(np.complex64),
            lambda: a.astype(np.complex128),
            lambda: a.astype(np.float16),
            lambda: a.astype(np.longdouble),
            lambda: a.astype(object),
            lambda: a.astype(a.dtype.newbyteorder(">")),
            lambda: a.astype(np.uint8),
            lambda: a.astype("U3"),
            lambda: a.astype(np.float32 if a.dtype == np.float64 else np.float64),
            lambda: np.ma.masked_array(a),
            lambda: a.view(_subclass(np)),
            lambda: memoryview(np.ascontiguousarray(a)),
            lambda: "array",
            lambda: (a,),
        ]
        return self.pick(choices)()

    def bad_shape_array(self, a):
        """An array of the same dtype whose shape is wrong in a random way."""
        np = self.np
        shape = list(a.shape)
        r = self.rng.random()
        if r < 0.2 or not shape:
            shape.insert(self.small(0, len(shape)), self.small(1, 3))     # extra axis
        elif r < 0.35:
            del shape[self.small(0, len(shape) - 1)]                       # missing axis
        elif r < 0.65:
            i = self.small(0, len(shape) - 1)
            shape[i] = max(0, shape[i] + self.pick([-2, -1, 1, 2]))       # off by a bit
        elif r < 0.8:
            shape[self.small(0, len(shape) - 1)] = 0                       # zero-size
        elif r < 0.9:
            # zero-size but huge along another axis (no memory needed)
            i = self.small(0, len(shape) - 1)
            shape[i] = 0
            j = self.small(0, len(shape) - 1)
            if j != i:
                shape[j] = self.pick([2**31, 2**40, 2**50])
            try:
                return np.empty(shape, dtype=a.dtype)
            except ValueError:  # numpy refuses some zero-size shapes with huge extents
                return np.empty([min(s, 2**31) for s in shape], dtype=a.dtype)
        else:
            shape = shape[::-1]
        if len(shape) > 7:
            shape = shape[:7]
        size = 1
        for v in shape:
            size *= v
        if size > 1 << 16:
            shape[0] = 0
            return np.empty(shape, dtype=a.dtype)
        return self.array(tuple(shape), a.dtype)

    def shape_tuple(self, shape):
        """A shape argument in one of the accepted spellings."""
        np = self.np
        r = self.rng.random()
        if r < 0.7:
            return tuple(shape)
        if r < 0.85:
            return list(shape)
        return tuple(np.int64(s) for s in shape)

    def param(self, values, d):
        """An int-or-d-tuple parameter, spelled as int when possible, or as tuple/list."""
        np = self.np
        values = tuple(int(v) for v in values)
        if len(set(values)) == 1 and self.chance(0.6):
            v = values[0]
            return np.int64(v) if self.chance(0.05) else v
        return list(values) if self.chance(0.15) else values


_SUBCLASS = None


def _subclass(np):
    global _SUBCLASS
    if _SUBCLASS is None:
        class Sub(np.ndarray):
            pass
        _SUBCLASS = Sub
    return _SUBCLASS


# ---- valid base configurations ----------------------------------------------------------

def _conv_geometry(g, extreme=False):
    """Random conv geometry: returns dict with d, N, G, Cg, Fg, K, S, stride, dilation,
    padding (as given) and pairs / O (None when the configuration is invalid)."""
    d = g.small(1, 3)
    G = g.pick([1, 1, 1, 2, 3])
    Cg = 1 if g.chance(0.15) else g.small(1, 3)
    Fg = g.small(1, 3)
    N = g.pick([0, 1, 1, 2, 3])
    K = tuple(g.small(1, 3 if d == 3 else 4) for _ in range(d))
    dil = tuple(g.pick([1, 1, 2, 3]) for _ in range(d))
    st = tuple(g.pick([1, 1, 2, 3]) for _ in range(d))
    span = tuple(dl * (k - 1) + 1 for k, dl in zip(K, dil))
    S = tuple(max(1, sp + g.small(-2, 4 if d == 3 else 6)) for sp in span)
    medium = not extreme and g.chance(0.06)
    if medium:
        # medium sizes: several tiles per image and every thread busy (races show here)
        Cg, Fg, N = g.small(4, 12), g.small(4, 16), g.small(2, 4)
        st = tuple(1 if g.chance(0.7) else s for s in st)
        S = tuple(sp + g.small(4, {1: 200, 2: 30, 3: 8}[d]) for sp in span)
    elif not extreme and g.chance(0.06):
        # many channels per group: the input gradient's flipped and per-stride-phase
        # correlations (at least 2 * mr = 16 channels) on small, odd inputs
        Cg, Fg = g.small(16, 40), g.small(1, 8)
    form = g.pick(["int", "tuple", "pairs", "valid", "same", "full"])
    if form == "int":
        p = g.small(0, 2)
        padding = p
        pairs = ((p, p),) * d
    elif form == "tuple":
        ps = tuple(g.small(0, 2) for _ in range(d))
        padding = ps if g.chance(0.8) else list(ps)
        pairs = tuple((p, p) for p in ps)
    elif form == "pairs":
        pairs = tuple((g.small(0, 2), g.small(0, 2)) for _ in range(d))
        padding = tuple(pairs) if g.chance(0.8) else [list(p) for p in pairs]
    elif form == "valid":
        padding, pairs = "valid", ((0, 0),) * d
    elif form == "full":
        padding = "full"
        pairs = tuple(((k - 1) * dl,) * 2 for k, dl in zip(K, dil))
    else:
        padding = "same"
        pairs = []
        for s, k, stv, dl in zip(S, K, st, dil):
            o = -(-s // stv)
            tot = max((o - 1) * stv + (k - 1) * dl + 1 - s, 0)
            pairs.append((tot // 2, tot - tot // 2))
        pairs = tuple(pairs)
    if extreme:
        # tiny arrays, astronomically large geometry numbers
        big = [2**31, 2**40, 2**61, 2**62 - 1, 2**62, 2**62 + 2**61, 2**63 - 1,
               2**62 + 2**61 + 2**60]
        K = tuple(g.small(1, 2) for _ in range(d))
        S = tuple(g.small(1, 5) for _ in range(d))
        st = tuple(g.pick(big + [1, 2]) for _ in range(d))
        dil = tuple(g.pick([1, 1, 2] + big) for _ in range(d))
        pairs = tuple((g.pick(big + [0, 1]), g.pick(big + [0, 1])) for _ in range(d))
        padding = pairs
        span = tuple(dl * (k - 1) + 1 for k, dl in zip(K, dil))
        N, G, Cg, Fg = 1, 1, 1, 1
    O = []
    for s, (lo, hi), sp, stv in zip(S, pairs, span, st):
        if s + lo + hi < sp:
            O = None
            break
        O.append((s + lo + hi - sp) // stv + 1)
    if O is not None:
        O = tuple(O)
        total = 1
        for o in O:
            total *= o
        if extreme and total * N * G * Fg > 2**20:
            # keep legal extreme calls cheap; the refusals are what we are after here
            pairs = tuple((0, 0) for _ in range(d))
            padding = 0
            O = tuple((s - sp) // stv + 1 if s >= sp else 0 for s, sp, stv in zip(S, span, st))
            if min(O) < 1:
                O = None
    return dict(d=d, N=N, G=G, Cg=Cg, Fg=Fg, K=K, S=S, stride=st, dilation=dil,
                padding=padding, pairs=pairs, O=O, medium=medium)


def _conv_kwargs(g, geo):
    kw = {}
    d = geo["d"]
    if geo["stride"] != (1,) * d or g.chance(0.3):
        kw["stride"] = g.param(geo["stride"], d)
    if geo["dilation"] != (1,) * d or g.chance(0.3):
        kw["dilation"] = g.param(geo["dilation"], d)
    if geo["padding"] != 0 or g.chance(0.3):
        kw["padding"] = geo["padding"]
    if geo["G"] != 1 or g.chance(0.3):
        kw["groups"] = geo["G"] if g.chance(0.95) else g.np.int64(geo["G"])
    return kw


def gen_conv(g, name, extreme=False):
    np = g.np
    geo = _conv_geometry(g, extreme)
    d, N, G, Cg, Fg = geo["d"], geo["N"], geo["G"], geo["Cg"], geo["Fg"]
    C, F = G * Cg, G * Fg
    dt = g.dtype()
    batched = g.chance(0.75)
    x_shape = ((N,) if batched else ()) + (C,) + geo["S"]
    w_shape = (F, Cg) + geo["K"]
    O = geo["O"] if geo["O"] is not None else tuple(g.small(1, 4) for _ in range(d))
    y_shape = ((N,) if batched else ()) + (F,) + O
    kw = _conv_kwargs(g, geo)
    if name == "conv_forward":
        args = [g.array(x_shape, dt), g.array(w_shape, dt)]
        r = g.rng.random()
        if r < 0.35:
            args.append(g.array((F,), dt))
        elif r < 0.6:
            args.append(g.array((F,) + O, dt))
        elif r < 0.7:
            kw["bias"] = None
        out_shape = y_shape
    elif name == "conv_backward_input":
        args = [g.array(y_shape, dt), g.array(w_shape, dt), g.shape_tuple(x_shape)]
        out_shape = x_shape
    elif name == "conv_backward_weight":
        args = [g.array(x_shape, dt), g.array(y_shape, dt), g.shape_tuple(w_shape)]
        out_shape = w_shape
    else:  # conv_backward_bias: batched grad_y only
        yb = (N, F) + O
        args = [g.array(yb, dt)]
        untied = g.chance(0.5)
        if untied or g.chance(0.3):
            kw["untied"] = untied
        out_shape = ((F,) + O) if untied else (F,)
        geo = dict(geo, O=O)  # bias gradient is valid for any O
    call = Call(name, args, kw, "conv-extreme" if extreme else
                ("conv-medium" if geo.get("medium") else "conv"))
    call.out_shape = out_shape
    call.dtype = np.dtype(dt)
    call.d = d
    call.valid_geometry = geo["O"] is not None
    call.ref_ok = call.valid_geometry and not extreme
    return call


def gen_conv_transpose(g, extreme=False):
    """conv_transpose: weight (C, F // groups, *K), int paddings, output_padding mostly
    below max(stride, dilation) (PyTorch's rule; sometimes not, to be refused)."""
    np = g.np
    d = g.small(1, 3)
    G = g.pick([1, 1, 2, 3])
    Cg, Fg, N = g.small(1, 3), g.small(1, 3), g.pick([0, 1, 1, 2])
    K = tuple(g.small(1, 3) for _ in range(d))
    st = tuple(g.pick([1, 1, 2, 3]) for _ in range(d))
    dil = tuple(g.pick([1, 1, 2, 3]) for _ in range(d))
    pad = tuple(g.small(0, 2) for _ in range(d))
    S = tuple(g.small(1, {1: 8, 2: 5, 3: 3}[d]) for _ in range(d))
    if extreme:
        big = [2**31, 2**40, 2**61, 2**62 - 1, 2**62, 2**63 - 1]
        st = tuple(g.pick(big + [1, 2]) for _ in range(d))
        dil = tuple(g.pick(big + [1, 2]) for _ in range(d))
        pad = tuple(g.pick(big + [0, 1]) for _ in range(d))
        N, G, Cg, Fg = 1, 1, 1, 1
    op = tuple(g.small(0, max(a, dl) - 1 + g.chance(0.1)) if max(a, dl) < 64 else g.pick([0, 1])
               for a, dl in zip(st, dil))
    O = tuple((s - 1) * a - 2 * p + dl * (k - 1) + e + 1
              for s, a, p, dl, k, e in zip(S, st, pad, dil, K, op))
    valid = min(O) >= 1 and all(e < max(a, dl) for e, a, dl in zip(op, st, dil))
    total = N * G * Fg
    for o in O:
        total *= max(o, 0)
    if valid and total > 2**20:
        valid = False  # legal but far too big to allocate: expect a refusal
    C, F = G * Cg, G * Fg
    dt = g.dtype()
    batched = g.chance(0.75)
    x_shape = ((N,) if batched else ()) + (C,) + S
    shown = O if valid else tuple(g.small(1, 4) for _ in range(d))
    kw = {}
    for key, values, default in (("stride", st, 1), ("padding", pad, 0),
                                 ("output_padding", op, 0), ("dilation", dil, 1)):
        if values != (default,) * d or g.chance(0.3):
            kw[key] = g.param(values, d)
    if G != 1 or g.chance(0.3):
        kw["groups"] = G
    args = [g.array(x_shape, dt), g.array((C, Fg) + K, dt)]
    if g.chance(0.5):
        args.append(g.array((F,), dt))
    call = Call("conv_transpose", args, kw, "conv-extreme" if extreme else "conv")
    call.out_shape = ((N,) if batched else ()) + (F,) + shown
    call.dtype = np.dtype(dt)
    call.d = d
    call.valid_geometry = valid
    call.ref_ok = valid and not extreme
    return call


def gen_pool(g, name, extreme=False):
    np = g.np
    d = g.small(1, 3)
    dt = g.dtype()
    N = g.pick([0, 1, 1, 2, 3])
    C = g.small(1, 3)
    K = tuple(g.small(1, 3 if d == 3 else 4) for _ in range(d))
    dil = tuple(g.pick([1, 1, 1, 2]) for _ in range(d))
    st = tuple(g.pick([1, 1, 2, 3]) for _ in range(d))
    ceil = g.chance(0.3)
    span = tuple(dl * (k - 1) + 1 for k, dl in zip(K, dil))
    # padding forms: ints (at most k // 2), (before, after) pairs (each below the span),
    # 'same' and 'valid'; `padding` is what the call passes, `pairs` what it means
    form = g.pick(["int", "int", "pairs", "same", "valid"])
    if form == "pairs":
        pairs = tuple((g.small(0, sp - 1), g.small(0, sp - 1)) for sp in span)
        padding = pairs if g.chance(0.8) else [list(p) for p in pairs]
    elif form == "int":
        pad = tuple(g.small(0, k // 2) for k in K)
        pairs = tuple((p, p) for p in pad)
        padding = g.param(pad, d)
    else:
        padding, pairs = form, ((0, 0),) * d  # 'same' pairs follow from S below
    S = tuple(max(1, sp - lo - hi + g.small(-1, 6 if d < 3 else 3))
              for sp, (lo, hi) in zip(span, pairs))
    if form == "same":
        pairs = []
        for s, sp, stv in zip(S, span, st):
            tot = max((-(-s // stv) - 1) * stv + sp - s, 0)
            pairs.append((tot // 2, tot - tot // 2))
        pairs = tuple(pairs)
    if extreme:
        big = [2**31, 2**40, 2**61, 2**62 - 1, 2**62, 2**62 + 2**61, 2**63 - 1]
        K = tuple(g.pick(big + [1, 2, 3]) for _ in range(d))
        # padding near its maximum of K // 2 keeps the huge window legal
        pad = tuple(k // 2 - g.pick([0, 0, 1, 2, 7]) if k > 16 else g.small(0, k // 2)
                    for k in K)
        st = tuple(g.pick(big + [1, 2]) for _ in range(d))
        dil = tuple(1 if g.chance(0.8) else g.pick(big) for _ in range(d))
        S = tuple(g.small(1, 5) for _ in range(d))
        N, C = 1, 1
        span = tuple(dl * (k - 1) + 1 for k, dl in zip(K, dil))
        pairs = tuple((p, p) for p in pad)
        padding = g.param(pad, d)
    O = []
    for s, _k, stv, (lo, hi), sp in zip(S, K, st, pairs, span):
        if s + lo + hi < sp:
            O = None
            break
        num = s + lo + hi - sp + (stv - 1 if ceil else 0)
        o = num // stv + 1
        if ceil and (o - 1) * stv >= s + lo:
            o -= 1
        O.append(o)
    if O is not None:
        total = 1
        for o in O:
            total *= o
        if total > 2**20:
            O = None  # far too big for the extreme generator; keep as invalid-ish call
    batched = g.chance(0.75)
    x_shape = ((N,) if batched else ()) + (C,) + S
    kw = {}
    if name == "maxpool_forward":
        ks = g.param(K, d) if batched else tuple(K)
        if not batched and g.chance(0.1):
            ks = K[0]  # int kernel on an unbatched input means d = ndim - 2: wrong d
        args = [g.array(x_shape, dt), ks]
        if st != K or g.chance(0.3):
            kw["stride"] = None if st == K and g.chance(0.5) else g.param(st, d)
        if form != "int" or any(lo for lo, _ in pairs) or g.chance(0.3):
            kw["padding"] = padding
        if any(v != 1 for v in dil) or g.chance(0.3):
            kw["dilation"] = g.param(dil, d)
        if ceil or g.chance(0.3):
            kw["ceil_mode"] = ceil
        call = Call(name, args, kw, "pool-extreme" if extreme else "pool")
        call.out_shape = None
    else:
        # maxpool_backward: indices from a real forward pass (or forged later)
        if O is None:
            O = tuple(g.small(1, 3) for _ in range(d))
            plane_ok = False
        else:
            plane_ok = True
        y_shape = ((N,) if batched else ()) + (C,) + tuple(O)
        plane = 1
        for s in S:
            plane *= s
        if plane_ok and not extreme:
            ck = _ck()
            xv = g.values(x_shape, dt)
            try:
                yv, iv = ck.maxpool_forward(xv, tuple(K), stride=st, padding=padding,
                                            dilation=dil, ceil_mode=ceil)
                idx = iv
            except EXPECTED:
                idx = g.rng.integers(0, plane, y_shape).astype(np.int64)
        else:
            idx = g.rng.integers(0, max(plane, 1), y_shape).astype(np.int64)
        args = [g.array(y_shape, dt), g.layout(idx), g.shape_tuple(x_shape)]
        if not batched or g.chance(0.2):
            kw["spatial_dims"] = d
        call = Call(name, args, kw, "pool-extreme" if extreme else "pool")
        call.out_shape = x_shape
        call.plane = plane
    call.dtype = np.dtype(dt)
    call.d = d
    call.valid_geometry = O is not None
    call.ref_ok = O is not None and not extreme
    return call


# ---- mutations ---------------------------------------------------------------------------

PARAM_KEYS = {
    "conv_forward": ["stride", "padding", "dilation", "groups", "bias"],
    "conv_backward_input": ["stride", "padding", "dilation", "groups"],
    "conv_backward_weight": ["stride", "padding", "dilation", "groups"],
    "conv_backward_bias": ["untied"],
    "conv_transpose": ["stride", "padding", "output_padding", "dilation", "groups"],
    "maxpool_forward": ["stride", "padding", "dilation", "ceil_mode"],
    "maxpool_backward": ["spatial_dims"],
}
HAS_OUT = {"conv_forward", "conv_backward_input", "conv_backward_weight",
           "conv_backward_bias", "conv_transpose", "maxpool_backward"}


def _array_positions(call):
    np = _np()
    pos = [("a", i) for i, a in enumerate(call.args) if isinstance(a, np.ndarray)]
    pos += [("k", k) for k, v in call.kwargs.items() if isinstance(v, np.ndarray) and k != "out"]
    return pos


def _get(call, where):
    kind, key = where
    return call.args[key] if kind == "a" else call.kwargs[key]


def _set(call, where, value):
    kind, key = where
    if kind == "a":
        call.args[key] = value
    else:
        call.kwargs[key] = value


def mut_param_weird(g, call):
    key = g.pick(PARAM_KEYS[call.name] + ["kernel_size"] * (call.name == "maxpool_forward"))
    if key == "kernel_size":
        call.args[1] = g.weird()
    else:
        call.kwargs[key] = g.weird()
    return f"{key}=weird"


def mut_param_entry(g, call):
    """Replace one entry of a tuple parameter (or of a padding pair)."""
    keys = [k for k, v in call.kwargs.items() if isinstance(v, (tuple, list)) and v]
    if call.name == "maxpool_forward" and isinstance(call.args[1], (tuple, list)):
        keys.append("kernel_size")
    if not keys:
        return mut_param_weird(g, call)
    key = g.pick(keys)
    v = list(call.args[1] if key == "kernel_size" else call.kwargs[key])
    i = g.small(0, len(v) - 1)
    if isinstance(v[i], (tuple, list)) and g.chance(0.7):
        pair = list(v[i])
        pair[g.small(0, len(pair) - 1)] = g.weird()
        v[i] = tuple(pair)
    else:
        v[i] = g.weird()
    v = tuple(v)
    if key == "kernel_size":
        call.args[1] = v
    else:
        call.kwargs[key] = v
    return f"{key}[{i}]=weird"


def mut_bad_array(g, call):
    pos = _array_positions(call)
    if not pos:
        return mut_param_weird(g, call)
    where = g.pick(pos)
    _set(call, where, g.bad_array(_get(call, where)))
    call.ref_ok = False
    return f"bad-array {where}"


def mut_bad_shape(g, call):
    pos = _array_positions(call)
    if not pos:
        return mut_param_weird(g, call)
    where = g.pick(pos)
    _set(call, where, g.bad_shape_array(_get(call, where)))
    call.ref_ok = False
    return f"bad-shape {where}"


def mut_shape_arg(g, call):
    """Corrupt x_shape / weight_shape (the tuple arguments)."""
    np = g.np
    idx = {"conv_backward_input": 2, "conv_backward_weight": 2, "maxpool_backward": 2}.get(call.name)
    if idx is None:
        return mut_bad_shape(g, call)
    shape = list(call.args[idx]) if isinstance(call.args[idx], (tuple, list)) else [1, 1, 1]
    r = g.rng.random()
    if r < 0.4 and shape:
        shape[g.small(0, len(shape) - 1)] = g.weird()
        new = tuple(shape)
    elif r < 0.55:
        shape.append(g.small(0, 3))
        new = tuple(shape)
    elif r < 0.7 and shape:
        new = tuple(shape[:-1])
    elif r < 0.8 and shape:
        i = g.small(0, len(shape) - 1)
        shape[i] = max(0, int(shape[i]) + g.pick([-1, 1])) if isinstance(shape[i], (int, np.integer)) else 1
        new = tuple(shape)
    else:
        new = g.pick([None, "shape", 3, np.array(shape if shape else [1]), (), (0,) * 4,
                      (1.0, 2.0, 3.0), (True, 1, 3), {1, 2, 3}])
    call.args[idx] = new
    call.ref_ok = False
    return "shape-arg"


def mut_dtype_mismatch(g, call):
    np = g.np
    pos = [p for p in _array_positions(call)
           if _get(call, p).dtype.kind == "f"]
    if not pos:
        return mut_bad_array(g, call)
    where = g.pick(pos)
    a = _get(call, where)
    _set(call, where, a.astype(np.float32 if a.dtype == np.float64 else np.float64))
    call.ref_ok = False
    return f"dtype-mismatch {where}"


def mut_forge_indices(g, call):
    np = g.np
    if call.name != "maxpool_backward":
        return mut_param_weird(g, call)
    idx = np.array(call.args[1], dtype=np.int64, copy=True)
    plane = getattr(call, "plane", 1)
    r = g.rng.random()
    if r < 0.85 and idx.size:
        k = g.small(1, max(1, idx.size // 3))
        where = g.rng.integers(0, idx.size, k)
        forged = [plane, plane + 1, -1, -plane, 2**31, 2**32, 2**62, 2**63 - 1, -2**63,
                  plane - 1, 0]
        flat = idx.reshape(-1)
        flat[where] = np.array([g.pick(forged) for _ in range(k)], dtype=np.int64)
        call.args[1] = g.layout(idx)
        return "forged-indices"
    kind = g.pick([np.int32, np.uint64, np.float64, np.int16, np.intp, np.uint32])
    call.args[1] = idx.astype(kind)
    call.ref_ok = False
    return "indices-dtype"


def mut_out(g, call):
    """Give an out= argument: correct, aliasing an input, or wrong."""
    np = g.np
    if call.name not in HAS_OUT:
        call.kwargs["out"] = np.empty(3)
        return "out-not-accepted"
    shape = call.out_shape
    dt = call.dtype
    inputs = [a for a in call.args if isinstance(a, np.ndarray)]
    r = g.rng.random()
    ok_shape = shape is not None and all(isinstance(s, int) and 0 <= s < 2**20 for s in shape)
    if not ok_shape:
        call.kwargs["out"] = np.empty(2, dtype=dt)
        return "out-shape-junk"
    size = 1
    for s in shape:
        size *= s
    if r < 0.3:
        call.kwargs["out"] = np.full(shape, np.nan, dtype=dt)   # correct, garbage-filled
        return "out-correct"
    if r < 0.6 and inputs:
        # alias an input: same buffer, as a view of the right shape when possible
        src = g.pick(inputs)
        base = src
        while isinstance(base.base, np.ndarray):
            base = base.base
        flat = None
        if base.flags.c_contiguous and base.flags.writeable and base.dtype == np.dtype(dt):
            flat = base.reshape(-1)
        if flat is not None and flat.size >= size:
            off = g.small(0, flat.size - size)
            call.kwargs["out"] = flat[off:off + size].reshape(shape)
            call.ref_ok = False
            return "out-aliases-input"
        call.kwargs["out"] = src
        call.ref_ok = False
        return "out-is-input"
    if r < 0.7:
        o = np.zeros(shape, dtype=dt)
        o.flags.writeable = False
        call.kwargs["out"] = o
        return "out-readonly"
    if r < 0.8:
        call.kwargs["out"] = np.zeros(shape, dtype=np.float32 if dt == np.float64 else np.float64)
        return "out-dtype"
    if r < 0.88 and len(shape) >= 1:
        call.kwargs["out"] = np.zeros(shape[::-1], dtype=dt, order="F").T  # F-order
        return "out-fortran"
    if r < 0.94:
        bad = list(shape) + [1]
        call.kwargs["out"] = np.zeros(bad, dtype=dt)
        return "out-shape"
    call.kwargs["out"] = g.pick([[0.0] * size, None, 3.0, np.zeros(shape, dtype=np.int64)])
    return "out-kind"


def mut_extra_arg(g, call):
    if g.chance(0.5):
        call.kwargs[g.pick(["bogus", "kernel", "strides", "pad"])] = 1
    else:
        call.args.append(g.weird())
    call.ref_ok = False
    return "extra-arg"


MUTATIONS = [
    (mut_param_weird, 5), (mut_param_entry, 4), (mut_bad_array, 3), (mut_bad_shape, 4),
    (mut_shape_arg, 3), (mut_dtype_mismatch, 2), (mut_forge_indices, 3), (mut_out, 4),
    (mut_extra_arg, 1),
]


FUNCS = ["conv_forward", "conv_backward_input", "conv_backward_weight",
         "conv_backward_bias", "conv_transpose", "maxpool_forward", "maxpool_backward"]


def make_call(np, seed, index):
    """Build call number ``index`` of ``seed`` (deterministic)."""
    rng = np.random.default_rng([seed, index])
    g = Gen(np, rng)
    r = rng.random()
    if r < 0.03:
        call = Call("set_num_threads", [g.weird() if g.chance(0.8) else g.small(1, 4)], {},
                    "threads")
        call.ref_ok = False
        call.out_shape = None
        call.dtype = None
        call.threads = None
        return call, g
    name = g.pick(FUNCS)
    extreme = r < 0.12
    if name == "conv_transpose":
        call = gen_conv_transpose(g, extreme)
    elif name.startswith("conv"):
        call = gen_conv(g, name, extreme)
    else:
        call = gen_pool(g, name, extreme)
    if name == "maxpool_backward" and g.chance(0.35):
        call.mutations.append(mut_forge_indices(g, call))
    if name in HAS_OUT and g.chance(0.2):
        call.mutations.append(mut_out(g, call))
    if name == "conv_backward_bias":
        # the geometry keywords belong to the other conv functions
        for k in ("stride", "padding", "dilation", "groups"):
            call.kwargs.pop(k, None)
    nmut = g.pick([0, 0, 0, 0, 1, 1, 1, 2, 3])
    fns = [f for f, w in MUTATIONS for _ in range(w)]
    for _ in range(nmut):
        fn = g.pick(fns)
        try:
            call.mutations.append(fn(g, call))
        except Exception:  # noqa: BLE001  (a mutation numpy cannot build: skip it)
            call.mutations.append(f"{fn.__name__}-skipped")
    if call.mutations:
        call.ref_ok = call.ref_ok and all(m in ("out-correct",) for m in call.mutations)
    call.threads = g.pick([1, 1, 2, 2, 3, 4])
    return call, g


# ======================================================================================
# Running one call (child side)
# ======================================================================================

_NP = None
_CK = None


def _np():
    global _NP
    if _NP is None:
        import numpy
        _NP = numpy
    return _NP


def _ck():
    """Import convkern: this checkout's if it is built in place, else the installed one."""
    global _CK
    if _CK is None:
        import glob
        built = glob.glob(os.path.join(ROOT, "convkern", "_conv*.so")) + \
            glob.glob(os.path.join(ROOT, "convkern", "_conv*.pyd"))
        if built and ROOT not in sys.path:
            sys.path.insert(0, ROOT)
        import convkern
        _CK = convkern
    return _CK


_REF = None


def _ref():
    """tests/reference.py and tests/conftest.assert_close, or None if unavailable."""
    global _REF
    if _REF is None:
        try:
            sys.path.insert(0, os.path.join(ROOT, "tests"))
            import conftest
            import reference
            _REF = (reference, conftest.assert_close)
        except Exception:  # noqa: BLE001  (the reference check is optional)
            _REF = False
    return _REF or None


def _snapshot(values):
    np = _np()
    snap = []
    for v in values:
        if isinstance(v, np.ndarray) and v.size <= 1 << 20:
            snap.append((v, v.shape, v.dtype, v.tobytes()))
    return snap


def _raised_in_kernel(exc):
    tb = traceback.extract_tb(exc.__traceback__)
    return bool(tb) and (tb[-1].filename.endswith((".pyx", ".pxd")) or "stringsource" in tb[-1].filename)


def _bits(result):
    np = _np()
    if isinstance(result, tuple):
        return tuple(_bits(r) for r in result)
    return (result.shape, result.dtype.str, np.ascontiguousarray(result).tobytes())


def _small_numbers(v, limit=64):
    """True when every number in a (nested) parameter is a plain small int."""
    if isinstance(v, bool):
        return True
    if isinstance(v, int):
        return -limit <= v <= limit
    if isinstance(v, (tuple, list)):
        return all(_small_numbers(e, limit) for e in v)
    return v is None or isinstance(v, str)


def _reference_check(call, result):
    """Compare a successful small call with tests/reference.py; return a message or None."""
    np = _np()
    ref = _ref()
    if ref is None or not call.ref_ok:
        return None
    reference, assert_close = ref
    kw = {k: v for k, v in call.kwargs.items() if k != "out"}
    if not all(_small_numbers(v) for v in kw.values()):
        return None
    if not all(_small_numbers(a) for a in call.args if not isinstance(a, np.ndarray)):
        return None
    if any(isinstance(a, np.ndarray) and a.size > 4096 for a in call.args):
        return None
    if any(isinstance(a, np.ndarray) and a.size == 0 for a in call.args):
        return None
    # Overflow and inf - inf depend on the order of summation, and the reference sums in
    # float64: compare only moderate finite values (test_numerics covers NaN and Inf).
    for a in call.args:
        if isinstance(a, np.ndarray) and a.dtype.kind == "f":
            if not np.isfinite(a).all() or np.abs(a).max() > 1e15:
                return None
    try:
        # The reference is written for valid calls only: if it cannot handle this one,
        # there is nothing to compare.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if call.name == "maxpool_forward":
                expected = reference.maxpool_forward(*call.args, **kw)
            elif call.name == "maxpool_backward":
                d = kw.get("spatial_dims") or call.d
                expected = reference.maxpool_backward(call.args[0], call.args[1], call.args[2], d)
            elif call.name == "conv_backward_bias":
                expected = reference.conv_backward_bias(call.args[0], untied=kw.get("untied", False))
            else:
                expected = getattr(reference, call.name)(*call.args, **kw)
    except Exception:  # noqa: BLE001
        return None
    dtype = call.args[0].dtype
    try:
        if call.name == "maxpool_forward":
            np.testing.assert_array_equal(result[1], expected[1])
            assert_close(result[0], expected[0], dtype)
        else:
            assert_close(result, expected, dtype)
    except AssertionError as e:
        return f"reference mismatch: {str(e)[:400]}"
    return None


def run_call(call):
    """Run one call; return (outcome, detail).

    outcome: 'ok', 'refused', 'crash' (unexpected exception) or 'violation';
    detail: exception type name, or a message.
    """
    np = _np()
    ck = _ck()
    if call.name == "set_num_threads":
        try:
            ck.set_num_threads(*call.args)
        except EXPECTED as e:
            return "refused", type(e).__name__, _raised_in_kernel(e)
        except Exception as e:  # noqa: BLE001
            return "crash", f"{type(e).__name__}: {e}", False
        finally:
            ck.set_num_threads(1)
        return "ok", "", False
    ck.set_num_threads(call.threads)
    fn = getattr(ck, call.name)
    inputs = list(call.args) + [v for k, v in call.kwargs.items() if k != "out"]
    snap = _snapshot(inputs)
    try:
        result = fn(*call.args, **call.kwargs)
    except EXPECTED as e:
        return "refused", type(e).__name__, _raised_in_kernel(e)
    except Exception as e:  # noqa: BLE001  (anything else is a crash by definition)
        return "crash", f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=4)}", False
    # ---- checks on a successful call ----
    for v, shape, dtype, data in snap:
        if v.shape != shape or v.dtype != dtype or v.tobytes() != data:
            return "violation", "an input was modified", False
    outs = result if isinstance(result, tuple) else (result,)
    for o in outs:
        if not isinstance(o, np.ndarray):
            return "violation", f"returned {type(o).__name__}", False
    first = call.args[0]
    if isinstance(first, np.ndarray) and outs[0].dtype != first.dtype:
        return "violation", f"output dtype {outs[0].dtype} for input dtype {first.dtype}", False
    if call.name == "maxpool_forward" and outs[1].dtype != np.int64:
        return "violation", f"indices dtype {outs[1].dtype}", False
    if isinstance(call.kwargs.get("out"), np.ndarray) and result is not call.kwargs["out"]:
        return "violation", "out= given but a different array returned", False
    # repeat with another thread count (and a garbage-filled out) and compare bits
    if call.rng_repeat:
        kwargs = dict(call.kwargs)
        if isinstance(kwargs.get("out"), np.ndarray):
            kwargs["out"] = np.full(kwargs["out"].shape, np.nan, kwargs["out"].dtype)
        ck.set_num_threads(call.repeat_threads)
        try:
            again = fn(*call.args, **kwargs)
        except Exception as e:  # noqa: BLE001
            return "violation", f"repeat raised {type(e).__name__}: {e}", False
        if _bits(again) != _bits(result):
            return ("violation",
                    f"different bits with {call.repeat_threads} threads than with "
                    f"{call.threads}", False)
    msg = _reference_check(call, result)
    if msg:
        return "violation", msg, False
    return "ok", "", False


def _force_threads():
    """convkern gives small calls fewer threads (convkern._work.threads_for); the fuzzer
    wants every call on the thread count it chose, so races show on small shapes too."""
    ck = _ck()
    for mod in (sys.modules.get("convkern.conv"), sys.modules.get("convkern.pool")):
        if mod is not None and hasattr(mod, "threads_for"):
            mod.threads_for = lambda work, grain: ck.get_num_threads()


def child_main(args):
    import faulthandler
    faulthandler.enable()
    warnings.simplefilter("ignore")
    if args.mem_limit_mb and not UNDER_ASAN:
        import resource
        lim = args.mem_limit_mb << 20
        resource.setrlimit(resource.RLIMIT_AS, (lim, lim))
    np = _np()
    if not args.natural_threads:
        _force_threads()
    trace = open(args.trace, "w", buffering=1) if args.trace else None
    counts = {"ok": 0, "refused": 0, "TypeError": 0, "ValueError": 0, "MemoryError": 0,
              "generator_errors": 0}
    problems = []
    notes = []
    for i in range(args.start, args.start + args.calls):
        try:
            call, g = make_call(np, args.seed, i)
        except Exception as e:  # noqa: BLE001  (a fuzzer bug, not a convkern crash)
            counts["generator_errors"] = counts.get("generator_errors", 0) + 1
            if len(notes) < 20:
                notes.append({"index": i, "call": "(generator)", "error": repr(e)})
            continue
        call.rng_repeat = g.chance(0.25) or call.kind == "conv-medium"
        call.repeat_threads = g.pick([n for n in (1, 2, 3, 4) if n != call.threads])
        if i == args.self_test_crash_at:
            call = Call("os.kill(SIGSEGV)", [], {}, "self-test")
            call.threads = 1
        if i == args.self_test_hang_at:
            call = Call("time.sleep(forever)", [], {}, "self-test-hang")
            call.threads = 1
        if trace:
            trace.write(f"{i}\t{call.describe()}\n")
        if call.kind == "self-test":
            os.kill(os.getpid(), signal.SIGSEGV)  # proves that a crash is caught
        if call.kind == "self-test-hang":
            while True:  # proves that a hang is caught
                time.sleep(1)
        try:
            outcome, detail, in_kernel = run_call(call)
        except Exception as e:  # noqa: BLE001  (the checks after the call failed: a fuzzer bug)
            outcome, detail, in_kernel = "harness", f"{type(e).__name__}: {e}", False
        if outcome == "refused":
            counts["refused"] += 1
            counts[detail] = counts.get(detail, 0) + 1
            if in_kernel and len(notes) < 20:
                notes.append({"index": i, "call": call.describe(), "error": detail})
        elif outcome == "ok":
            counts["ok"] += 1
        else:
            if len(problems) < 50:
                problems.append({"index": i, "kind": outcome, "detail": detail,
                                 "call": call.describe()})
            else:
                counts["unlisted_" + outcome] = counts.get("unlisted_" + outcome, 0) + 1
    made = args.calls - counts["generator_errors"]
    summary = {"calls": made, "counts": counts, "problems": problems, "notes": notes,
               "convkern": os.path.dirname(_ck().__file__)}
    sys.stdout.write(SUMMARY_TAG + json.dumps(summary) + "\n")
    sys.stdout.flush()
    if trace:
        trace.close()


def replay_main(spec, natural_threads):
    seed, index = (int(v) for v in spec.split(":"))
    np = _np()
    if not natural_threads:
        _force_threads()
    call, g = make_call(np, seed, index)
    call.rng_repeat = g.chance(0.25) or call.kind == "conv-medium"
    call.repeat_threads = g.pick([n for n in (1, 2, 3, 4) if n != call.threads])
    print(call.describe())
    print("->", run_call(call))


# ======================================================================================
# Parent: batches in child processes
# ======================================================================================

def _child_cmd(args, seed, start, calls, trace=None):
    cmd = [sys.executable, os.path.abspath(__file__), "--child", "--seed", str(seed),
           "--start", str(start), "--calls", str(calls), "--mem-limit-mb", str(args.mem_limit_mb),
           "--self-test-crash-at", str(args.self_test_crash_at),
           "--self-test-hang-at", str(args.self_test_hang_at)]
    if args.natural_threads:
        cmd.append("--natural-threads")
    if trace:
        cmd += ["--trace", trace]
    return cmd


def _run_child(args, seed, start, calls, trace=None):
    """Run a child; return (summary or None, returncode or 'timeout', stderr tail)."""
    env = dict(os.environ)
    env.setdefault("PYTHONFAULTHANDLER", "1")
    if args.self_test_crash_at >= 0 and UNDER_ASAN:
        # the self-test's SIGSEGV must stay a plain signal, not an AddressSanitizer report
        env["ASAN_OPTIONS"] = env.get("ASAN_OPTIONS", "") + ":handle_segv=0"
    try:
        proc = subprocess.run(_child_cmd(args, seed, start, calls, trace), capture_output=True,
                              text=True, timeout=args.timeout, env=env, cwd=ROOT)
    except subprocess.TimeoutExpired as e:
        err = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else (e.stderr or "")
        return None, "timeout", err[-3000:]
    summary = None
    for line in proc.stdout.splitlines():
        if line.startswith(SUMMARY_TAG):
            summary = json.loads(line[len(SUMMARY_TAG):])
    return summary, proc.returncode, proc.stderr[-3000:]


def _describe_rc(rc):
    if rc == "timeout":
        return "hang (timeout)"
    if isinstance(rc, int) and rc < 0:
        try:
            return f"killed by {signal.Signals(-rc).name}"
        except ValueError:
            return f"killed by signal {-rc}"
    return f"exit status {rc} without a summary"


def parent_main(args):
    seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(4), "little")
    t0 = time.time()
    totals = {"calls": 0, "ok": 0, "refused": 0, "TypeError": 0, "ValueError": 0,
              "MemoryError": 0}
    crashes, violations, notes, harness = [], [], [], []
    next_index = 0
    end = args.calls
    batches = 0
    log = (lambda *a: None) if args.quiet else (lambda *a: print(*a, flush=True))
    log(f"convkern fuzz: seed {seed}, {args.calls} calls in batches of {args.batch}")

    def absorb(summary):
        totals["convkern"] = summary.get("convkern")
        totals["calls"] += summary["calls"]
        for k, v in summary["counts"].items():
            totals[k] = totals.get(k, 0) + v
        for p in summary["problems"]:
            p["repro"] = f"python tools/fuzz.py --replay {seed}:{p['index']}"
            {"crash": crashes, "violation": violations}.get(p["kind"], harness).append(p)
        notes.extend(summary["notes"][: max(0, 20 - len(notes))])

    while next_index < end:
        n = min(args.batch, end - next_index)
        summary, rc, err = _run_child(args, seed, next_index, n)
        batches += 1
        if summary is not None and rc == 0:
            absorb(summary)
            next_index += n
        else:
            # find the call that killed the child: rerun the batch with a trace file
            fd, path = tempfile.mkstemp(prefix="convkern-fuzz-", suffix=".trace")
            os.close(fd)
            try:
                summary2, rc2, err2 = _run_child(args, seed, next_index, n, trace=path)
                with open(path) as f:
                    lines = f.read().splitlines()
            finally:
                os.unlink(path)
            if summary2 is not None and rc2 == 0:
                # not reproduced: count it, keep the rerun's results
                crashes.append({"kind": "crash", "detail": f"{_describe_rc(rc)} (not reproduced "
                                f"on rerun)", "call": f"batch {seed}:{next_index}+{n}",
                                "stderr": err[-1500:]})
                absorb(summary2)
                next_index += n
                continue
            last = lines[-1] if lines else f"{next_index}\t(no call started)"
            idx_s, _, desc = last.partition("\t")
            idx = int(idx_s) if idx_s.isdigit() else next_index
            crashes.append({"kind": "crash", "index": idx, "detail": _describe_rc(rc2),
                            "call": desc, "stderr": err2[-1500:],
                            "repro": f"python tools/fuzz.py --replay {seed}:{idx}"})
            log(f"  CRASH at {seed}:{idx}: {_describe_rc(rc2)}: {desc}")
            if idx > next_index:
                # the calls before the crashing one: run them again for their outcomes
                summary3, rc3, err3 = _run_child(args, seed, next_index, idx - next_index)
                if summary3 is not None and rc3 == 0:
                    absorb(summary3)
                else:
                    totals["calls"] += idx - next_index
                    crashes.append({"kind": "crash", "detail": f"{_describe_rc(rc3)} (rerun "
                                    f"of the calls before {seed}:{idx})",
                                    "call": f"batch {seed}:{next_index}+{idx - next_index}",
                                    "stderr": err3[-1500:]})
            totals["calls"] += 1
            next_index = idx + 1
        if batches % 10 == 0:
            log(f"  {next_index}/{end} calls, {len(crashes)} crashes, "
                f"{len(violations)} violations, {time.time() - t0:.0f} s")
    elapsed = time.time() - t0
    report = {
        "seed": seed, "calls": totals["calls"], "crashes": len(crashes),
        "violations": len(violations), "ok": totals["ok"], "refused": totals["refused"],
        "refusals": {k: totals.get(k, 0) for k in ("TypeError", "ValueError", "MemoryError")},
        "kernel_level_refusals_sampled": sum(n["call"] != "(generator)" for n in notes),
        "generator_errors": totals.get("generator_errors", 0), "seconds": round(elapsed, 1),
        "convkern": totals.get("convkern"),
    }
    print(f"convkern fuzz: seed {seed}: {report['calls']} calls, {report['crashes']} crashes, "
          f"{report['violations']} violations ({report['ok']} ok, {report['refused']} refused: "
          f"{report['refusals']}) in {elapsed:.0f} s")
    if report["generator_errors"]:
        print(f"({report['generator_errors']} generated calls skipped: fuzzer could not build them)")
    for p in crashes[:20]:
        print(f"CRASH: {p['detail']}\n  call: {p['call']}\n  repro: {p.get('repro', '-')}")
        if p.get("stderr"):
            print("  stderr: " + p["stderr"].strip().replace("\n", "\n          ")[-1200:])
    for p in violations[:20]:
        print(f"VIOLATION: {p['detail']}\n  call: {p['call']}\n  repro: {p['repro']}")
    for p in harness[:5]:
        print(f"FUZZER BUG (not counted as a crash): {p['detail']}\n  call: {p['call']}")
    for p in notes[:5]:
        print(f"NOTE (refused inside a compiled module): {p['error']}: {p['call']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(report, crash_list=crashes, violation_list=violations,
                           notes=notes), f, indent=1)
    if crashes or violations:
        return 1
    return 2 if harness else 0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--calls", type=int, default=10000, help="number of calls (default 10000)")
    ap.add_argument("--batch", type=int, default=2000, help="calls per child process")
    ap.add_argument("--seed", type=int, default=None, help="seed (default: random, printed)")
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds per child batch")
    ap.add_argument("--mem-limit-mb", type=int, default=4096,
                    help="child address-space limit, 0 for none (ignored under ASan)")
    ap.add_argument("--json", help="also write the full report to this file")
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument("--replay", metavar="SEED:INDEX", help="run one call in this process")
    ap.add_argument("--self-test-crash-at", type=int, default=-1,
                    help="make call INDEX kill its child with SIGSEGV (tests the fuzzer)")
    ap.add_argument("--self-test-hang-at", type=int, default=-1,
                    help="make call INDEX hang (tests the fuzzer's timeout)")
    ap.add_argument("--natural-threads", action="store_true",
                    help="let convkern pick fewer threads for small calls (default: every "
                         "call uses the thread count the fuzzer chose)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--start", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--trace", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child_main(args)
        return 0
    if args.replay:
        replay_main(args.replay, args.natural_threads)
        return 0
    return parent_main(args)


if __name__ == "__main__":
    sys.exit(main())
