"""Every bad-input category of issue 2, section 3, in one table-driven test.

Each row is (id, code, exception type, message regex, isolate). ``code`` is a statement
run with the names of PRELUDE in scope; it must raise ``exception`` with a message
matching ``regex`` (which names the offending argument). Kinds of argument that are
wrong are a TypeError; wrong values are a ValueError.

Rows with ``isolate=True`` could crash the interpreter if a check were missing (forged
max-pool indices, sizes whose products overflow, huge values): they run in a fresh
``sys.executable`` so a segfault fails that one row instead of killing pytest.
"""

import re
import subprocess
import sys
import textwrap

import pytest

import convkern

PRELUDE = """
import numpy as np
import convkern as ck
f32, f64 = np.float32, np.float64
x = np.ones((2, 3, 8, 8))             # 2-D input, N=2, C=3
w = np.ones((4, 3, 3, 3))             # F=4
b = np.ones(4)
y = ck.conv_forward(x, w)             # (2, 4, 6, 6)
x1 = np.ones((2, 4, 10)); w1 = np.ones((6, 2, 3))      # 1-D, groups=2 works
x3 = np.ones((1, 2, 5, 5, 5)); w3 = np.ones((2, 2, 2, 2, 2))
px = np.arange(2 * 3 * 6 * 6, dtype=f64).reshape(2, 3, 6, 6)
py, pi = ck.maxpool_forward(px, 2)    # (2, 3, 3, 3), indices in [0, 36)
"""

T, V = TypeError, ValueError

# (id, code, exception, regex, isolate)
BAD = [
    # ---- TypeError: None and lists where an array is needed -------------------------
    ("x-None", "ck.conv_forward(None, w)", T, r"\bx\b.*ndarray.*NoneType", False),
    ("weight-list", "ck.conv_forward(x, w.tolist())", T, r"weight.*ndarray.*list", False),
    ("bias-list", "ck.conv_forward(x, w, [1.0] * 4)", T, r"bias.*ndarray.*list", False),
    ("grad_y-None-input", "ck.conv_backward_input(None, w, x.shape)", T, r"grad_y.*ndarray",
     False),
    ("weight-None-input", "ck.conv_backward_input(y, None, x.shape)", T, r"weight.*ndarray",
     False),
    ("x-list-weight", "ck.conv_backward_weight(x.tolist(), y, w.shape)", T, r"\bx\b.*ndarray",
     False),
    ("grad_y-None-weight", "ck.conv_backward_weight(x, None, w.shape)", T, r"grad_y.*ndarray",
     False),
    ("grad_y-list-bias", "ck.conv_backward_bias(y.tolist())", T, r"grad_y.*ndarray", False),
    ("pool-x-None", "ck.maxpool_forward(None, 2)", T, r"\bx\b.*ndarray", False),
    ("pool-grad_y-list", "ck.maxpool_backward(py.tolist(), pi, px.shape)", T,
     r"grad_y.*ndarray", False),
    ("pool-indices-None", "ck.maxpool_backward(py, None, px.shape)", T, r"indices.*ndarray",
     False),
    ("x_shape-None", "ck.conv_backward_input(y, w, None)", T, r"x_shape", False),
    ("weight_shape-None", "ck.conv_backward_weight(x, y, None)", T, r"weight_shape", False),
    # ---- TypeError: integer / bool / complex / object / big-endian dtypes ------------
    ("x-int64", "ck.conv_forward(x.astype(np.int64), w)", T, r"\bx\b.*dtype.*int64", False),
    ("weight-int32", "ck.conv_forward(x, w.astype(np.int32))", T, r"weight.*dtype.*int32",
     False),
    ("x-bool", "ck.conv_forward(x.astype(bool), w)", T, r"\bx\b.*dtype.*bool", False),
    ("weight-complex", "ck.conv_forward(x, w.astype(complex))", T, r"weight.*dtype.*complex",
     False),
    ("x-object", "ck.conv_forward(x.astype(object), w)", T, r"\bx\b.*dtype.*object", False),
    ("x-float16", "ck.conv_forward(x.astype(np.float16), w)", T, r"\bx\b.*dtype.*float16",
     False),
    ("x-big-endian", "ck.conv_forward(x.astype('>f8'), w)", T, r"\bx\b.*(byte order|>f8)",
     False),
    ("weight-big-endian", "ck.conv_forward(x, w.astype('>f4'))", T,
     r"weight.*(byte order|>f4)", False),
    ("grad_y-int-bias", "ck.conv_backward_bias(y.astype(np.int64))", T, r"grad_y.*dtype",
     False),
    ("pool-x-int", "ck.maxpool_forward(px.astype(np.int64), 2)", T, r"\bx\b.*dtype", False),
    ("pool-x-big-endian", "ck.maxpool_forward(px.astype('>f8'), 2)", T,
     r"\bx\b.*(byte order|>f8)", False),
    ("pool-grad_y-big-endian", "ck.maxpool_backward(py.astype('>f8'), pi, px.shape)", T,
     r"grad_y.*(byte order|>f8)", False),
    ("pool-indices-big-endian", "ck.maxpool_backward(py, pi.astype('>i8'), px.shape)", T,
     r"indices.*(byte order|>i8)", False),
    ("pool-indices-int32", "ck.maxpool_backward(py, pi.astype(np.int32), px.shape)", T,
     r"indices.*dtype.*int64", False),
    ("pool-indices-float", "ck.maxpool_backward(py, pi.astype(f64), px.shape)", T,
     r"indices.*dtype.*int64", False),
    ("pool-grad_y-int", "ck.maxpool_backward(pi, pi, px.shape)", T, r"grad_y.*dtype", False),
    # ---- TypeError: dtype mismatch between arguments ----------------------------------
    ("x-f32-weight-f64", "ck.conv_forward(x.astype(f32), w)", T,
     r"weight.*float64.*x.*float32|x.*float32.*weight.*float64", False),
    ("bias-f32", "ck.conv_forward(x, w, b.astype(f32))", T, r"bias.*float32", False),
    ("input-grad-mismatch", "ck.conv_backward_input(y.astype(f32), w, x.shape)", T,
     r"grad_y.*float32.*weight|weight.*float64.*grad_y", False),
    ("weight-grad-mismatch", "ck.conv_backward_weight(x, y.astype(f32), w.shape)", T,
     r"grad_y.*float32.*\bx\b|\bx\b.*float64.*grad_y", False),
    # ---- ValueError: wrong ndim --------------------------------------------------------
    ("x-ndim", "ck.conv_forward(x[0, 0], w)", V, r"\bx\b.*dimensions", False),
    ("x-ndim-high", "ck.conv_forward(x[None], w)", V, r"\bx\b.*dimensions", False),
    ("weight-ndim-2", "ck.conv_forward(x, w[0, 0])", V, r"weight.*dimensions", False),
    ("weight-ndim-6", "ck.conv_forward(x, w[None, None])", V, r"weight.*dimensions", False),
    ("pool-x-ndim", "ck.maxpool_forward(px[0, 0, 0], 2)", V, r"\bx\b.*dimensions", False),
    ("pool-kernel-len", "ck.maxpool_forward(px, (2, 2, 2, 2))", V, r"kernel_size", False),
    ("pool-kernel-vs-x", "ck.maxpool_forward(px[0, 0], (2, 2, 2))", V, r"\bx\b.*dimensions",
     False),
    ("bias-grad-ndim", "ck.conv_backward_bias(np.ones((2, 3)))", V, r"grad_y.*dimensions",
     False),
    ("x_shape-negative", "ck.conv_backward_input(y, w, (2, 3, -8, 8))", V, r"x_shape\[2\]",
     False),
    ("x_shape-len", "ck.conv_backward_input(y, w, (2, 3, 8, 8, 8))", V, r"x_shape", False),
    ("weight_shape-len", "ck.conv_backward_weight(x, y, (4, 3))", V, r"weight_shape", False),
    ("pool-grad_y-ndim", "ck.maxpool_backward(py[0], pi[0], px.shape)", V,
     r"grad_y.*dimensions", False),
    ("stride-len", "ck.conv_forward(x, w, stride=(1, 1, 1))", V, r"stride.*2 entries", False),
    ("padding-len", "ck.conv_forward(x, w, padding=(1,))", V, r"padding.*2 entries", False),
    ("padding-pair-len", "ck.conv_forward(x, w, padding=((1, 1, 1), 0))", V,
     r"padding\[0\]", False),
    ("padding-string", "ck.conv_forward(x, w, padding='half')", V, r"padding.*'half'", False),
    # ---- ValueError: channel or groups mismatch ---------------------------------------
    ("channels", "ck.conv_forward(np.ones((2, 5, 8, 8)), w)", V, r"\bx\b.*5 channels", False),
    ("groups-channels", "ck.conv_forward(x1[:, :3], w1, groups=2)", V,
     r"\bx\b.*3 channels.*groups", False),
    ("groups-filters", "ck.conv_forward(x1, w1[:5], groups=2)", V, r"groups.*5 filters",
     False),
    ("groups-zero", "ck.conv_forward(x, w, groups=0)", V, r"groups.*>= 1", False),
    ("groups-negative", "ck.conv_forward(x, w, groups=-3)", V, r"groups.*>= 1", False),
    ("input-grad-channels", "ck.conv_backward_input(y, w, (2, 5, 8, 8))", V,
     r"x_shape.*5 channels", False),
    ("weight-grad-channels", "ck.conv_backward_weight(x, y, (4, 2, 3, 3))", V,
     r"\bx\b.*3 channels", False),
    # ---- ValueError: kernel larger than the padded input ------------------------------
    ("kernel-too-big", "ck.conv_forward(x[..., :2, :2], w)", V, r"kernel.*larger.*padded input",
     False),
    ("kernel-too-big-dilated", "ck.conv_forward(x, w, dilation=4)", V,
     r"kernel.*dilation 4.*larger", False),
    ("kernel-too-big-3d", "ck.conv_forward(x3[..., :1], w3, padding=0)", V,
     r"kernel.*larger.*axis 2", False),
    ("pool-kernel-too-big", "ck.maxpool_forward(px, 7)", V, r"kernel_size.*larger", False),
    ("pool-kernel-too-big-dilated", "ck.maxpool_forward(px, 3, dilation=3)", V,
     r"kernel_size.*larger", False),
    # ---- ValueError: stride / dilation <= 0 -------------------------------------------
    ("stride-zero", "ck.conv_forward(x, w, stride=0)", V, r"stride.*>= 1.*0", False),
    ("stride-negative-entry", "ck.conv_forward(x, w, stride=(1, -2))", V, r"stride\[1\]",
     False),
    ("dilation-zero", "ck.conv_forward(x, w, dilation=0)", V, r"dilation.*>= 1", False),
    ("input-grad-stride", "ck.conv_backward_input(y, w, x.shape, stride=0)", V, r"stride",
     False),
    ("weight-grad-dilation", "ck.conv_backward_weight(x, y, w.shape, dilation=(0, 1))", V,
     r"dilation\[0\]", False),
    ("pool-stride-zero", "ck.maxpool_forward(px, 2, stride=0)", V, r"stride", False),
    ("pool-dilation-negative", "ck.maxpool_forward(px, 2, dilation=-1)", V, r"dilation",
     False),
    ("pool-kernel-zero", "ck.maxpool_forward(px, 0)", V, r"kernel_size", False),
    # ---- ValueError: negative padding ---------------------------------------------------
    ("padding-negative", "ck.conv_forward(x, w, padding=-1)", V, r"padding.*>= 0", False),
    ("padding-negative-entry", "ck.conv_forward(x, w, padding=(0, -1))", V, r"padding\[1\]",
     False),
    ("padding-negative-pair", "ck.conv_forward(x, w, padding=((0, 0), (2, -1)))", V,
     r"padding\[1\]\[1\]", False),
    ("pool-padding-negative", "ck.maxpool_forward(px, 2, padding=-1)", V, r"padding", False),
    # ---- ValueError: bool or float where an int is expected ---------------------------
    ("stride-bool", "ck.conv_forward(x, w, stride=True)", V, r"stride.*bool", False),
    ("stride-float", "ck.conv_forward(x, w, stride=2.0)", V, r"stride.*float", False),
    ("padding-float", "ck.conv_forward(x, w, padding=1.5)", V, r"padding.*float", False),
    ("dilation-bool-entry", "ck.conv_forward(x, w, dilation=(1, False))", V,
     r"dilation\[1\].*bool", False),
    ("groups-float", "ck.conv_forward(x, w, groups=1.0)", V, r"groups.*float", False),
    ("pool-kernel-float", "ck.maxpool_forward(px, 2.0)", V, r"kernel_size.*float", False),
    ("pool-padding-bool", "ck.maxpool_forward(px, 2, padding=True)", V, r"padding.*bool",
     False),
    ("x_shape-float", "ck.conv_backward_input(y, w, (2.0, 3, 8, 8))", V, r"x_shape\[0\]",
     False),
    ("threads-bool", "ck.set_num_threads(True)", V, r"\bn\b.*bool", False),
    ("threads-zero", "ck.set_num_threads(0)", V, r"\bn\b.*>= 1", False),
    # ---- ValueError: pool padding over half the kernel --------------------------------
    ("pool-padding-over-half", "ck.maxpool_forward(px, 3, padding=2)", V,
     r"padding.*half.*kernel", False),
    ("pool-padding-over-half-axis", "ck.maxpool_forward(px, (2, 4), padding=(1, 3))", V,
     r"padding.*axis 1.*half", False),
    # ---- ValueError: bias or gradient shape mismatch ----------------------------------
    ("bias-shape", "ck.conv_forward(x, w, np.ones(5))", V, r"bias.*shape", False),
    ("bias-untied-shape", "ck.conv_forward(x, w, np.ones((4, 5, 6)))", V, r"bias.*shape",
     False),
    ("bias-batched", "ck.conv_forward(x, w, np.ones((2, 4, 6, 6)))", V, r"bias.*shape", False),
    ("input-grad-shape", "ck.conv_backward_input(y[..., :5], w, x.shape)", V,
     r"grad_y.*shape", False),
    ("input-grad-batch", "ck.conv_backward_input(y[:1], w, x.shape)", V, r"grad_y.*shape",
     False),
    ("weight-grad-shape", "ck.conv_backward_weight(x, y[:, :3], w.shape)", V,
     r"grad_y.*shape", False),
    ("weight-grad-stride", "ck.conv_backward_weight(x, y, w.shape, stride=2)", V,
     r"grad_y.*shape", False),
    ("pool-indices-shape", "ck.maxpool_backward(py, pi[..., :2], px.shape)", V,
     r"indices.*shape", False),
    ("pool-grad-batch", "ck.maxpool_backward(py, pi, (3, 3, 6, 6))", V, r"grad_y.*x_shape",
     False),
    # ---- ValueError: zero-size channel or spatial dims --------------------------------
    ("x-zero-channels", "ck.conv_forward(np.ones((2, 0, 8, 8)), np.ones((4, 0, 3, 3)))", V,
     r"zero-size", False),
    ("x-zero-spatial", "ck.conv_forward(np.ones((2, 3, 0, 8)), w)", V, r"\bx\b.*zero-size",
     False),
    ("weight-zero-filters", "ck.conv_forward(x, np.ones((0, 3, 3, 3)))", V,
     r"weight.*zero-size", False),
    ("weight-zero-kernel", "ck.conv_forward(x, np.ones((4, 3, 0, 3)))", V,
     r"weight.*zero-size", False),
    ("x_shape-zero-spatial", "ck.conv_backward_input(y, w, (2, 3, 8, 0))", V, r"zero-size",
     False),
    ("bias-grad-zero-filters", "ck.conv_backward_bias(np.ones((2, 0, 3)))", V,
     r"grad_y.*zero-size", False),
    ("pool-x-zero-spatial", "ck.maxpool_forward(np.ones((2, 3, 0, 4)), 2)", V,
     r"\bx\b.*zero-size", False),
    ("pool-x-zero-channels", "ck.maxpool_forward(np.ones((2, 0, 4, 4)), 2)", V,
     r"\bx\b.*zero-size", False),
    ("pool-x_shape-zero", "ck.maxpool_backward(py[:, :, :0], pi[:, :, :0], (2, 3, 0, 6))", V,
     r"x_shape.*zero-size|zero-size.*x_shape", False),
    # ---- ValueError: sizes whose products overflow (isolated) -------------------------
    ("x_shape-overflow", "ck.conv_backward_input(y, w, (2**40, 3, 2**40, 2**40))", V,
     r"x.*(too many|too large|overflow)", True),
    ("x_shape-int64-overflow", "ck.conv_backward_input(y, w, (2, 3, 2**64, 8))", V,
     r"x.*(too many|too large|overflow)", True),
    ("weight_shape-overflow", "ck.conv_backward_weight(x, y, (2**40, 2**40, 3, 3))", V,
     r"weight.*(too many|too large|overflow)|groups.*filters|channels", True),
    ("padding-overflow", "ck.conv_forward(x, w, padding=2**62)", V,
     r"(output|padding).*(too many|too large|overflow)", True),
    ("padding-huge", "ck.conv_forward(x, w, padding=10**30)", V,
     r"(output|padding).*(too many|too large|overflow)", True),
    ("padding-huge-pair", "ck.conv_forward(x, w, padding=((0, 2**63), (0, 0)))", V,
     r"(output|padding).*(too many|too large|overflow)", True),
    ("dilation-full-overflow", "ck.conv_forward(x, w, padding='full', dilation=2**62)", V,
     r"(output|dilation|padding).*(too many|too large|overflow)", True),
    ("stride-huge", "ck.conv_forward(x, w, stride=2**70)", V, r"stride", True),
    ("dilation-huge", "ck.conv_forward(x, w, dilation=2**70)", V, r"dilation|kernel", True),
    ("pool-stride-huge", "ck.maxpool_forward(px, 2, stride=2**70)", V, r"stride", True),
    ("pool-padding-huge", "ck.maxpool_forward(px, 2**63, padding=2**62)", V,
     r"kernel_size|padding|too many|too large|overflow", True),
    ("pool-x_shape-overflow",
     "ck.maxpool_backward(py, pi, (2, 3, 2**62, 2**62))", V,
     r"x_shape.*(too many|too large|overflow)", True),
    # A thread count no kernel can use must be refused when it is set or when it is used.
    ("threads-huge", "ck.set_num_threads(2**40)\nck.conv_forward(x, w)", V,
     r"\bn\b|thread", True),
    # ---- ValueError: forged max-pool indices outside the plane (isolated) -------------
    ("indices-past-plane", "pi2 = pi.copy(); pi2[1, 2, 2, 2] = 36\n"
     "ck.maxpool_backward(py, pi2, px.shape)", V, r"indices.*outside", True),
    ("indices-negative", "pi2 = pi.copy(); pi2[0, 0, 0, 0] = -1\n"
     "ck.maxpool_backward(py, pi2, px.shape)", V, r"indices.*outside", True),
    ("indices-huge", "pi2 = pi.copy(); pi2[0, 1, 1, 0] = 2**62\n"
     "ck.maxpool_backward(py, pi2, px.shape)", V, r"indices.*outside", True),
    ("indices-int64-min", "pi2 = pi.copy(); pi2[1, 0, 0, 1] = np.iinfo(np.int64).min\n"
     "ck.maxpool_backward(py, pi2, px.shape)", V, r"indices.*outside", True),
    ("indices-other-plane", "pi2 = np.full_like(pi, 100)\n"
     "ck.maxpool_backward(py, pi2, px.shape)", V, r"indices.*outside", True),
    ("indices-unbatched", "ck.maxpool_backward(py[0], pi[0] + 30, px.shape[1:], "
     "spatial_dims=2)", V, r"indices.*outside", True),
    # ---- out= arguments: read-only, wrong shape or dtype, sharing memory --------------
    ("out-readonly", "o = np.empty_like(y); o.flags.writeable = False\n"
     "ck.conv_forward(x, w, out=o)", V, r"\bout\b.*read-only", False),
    ("out-shape", "ck.conv_forward(x, w, out=np.empty((2, 4, 6, 5)))", V, r"\bout\b.*shape",
     False),
    ("out-dtype", "ck.conv_forward(x, w, out=np.empty((2, 4, 6, 6), f32))", T,
     r"\bout\b.*dtype", False),
    ("out-list", "ck.conv_backward_bias(y, out=[0.0] * 4)", T, r"\bout\b.*ndarray", False),
    ("out-aliases-input", "o = x.reshape(-1)[:2 * 4 * 6 * 6].reshape(2, 4, 6, 6)\n"
     "ck.conv_forward(x, w, out=o)", V, r"\bout\b.*shares memory", False),
    ("out-aliases-grad", "o = x.reshape(-1)[:4 * 3 * 3 * 3].reshape(4, 3, 3, 3)\n"
     "ck.conv_backward_weight(x, y, w.shape, out=o)", V, r"\bout\b.*shares memory", False),
]

_RUNNER = """
import sys
{prelude}
try:
{code}
except BaseException as e:
    print("EXC", type(e).__name__)
    print(str(e))
    sys.exit(0)
print("EXC none")
"""


def _run_isolated(code):
    script = _RUNNER.format(prelude=PRELUDE, code=textwrap.indent(code, "    "))
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120, cwd=None)
    assert proc.returncode == 0, (
        f"the interpreter died (return code {proc.returncode}):\n{proc.stderr[-2000:]}"
    )
    first, _, message = proc.stdout.partition("\n")
    assert first.startswith("EXC "), proc.stdout
    return first[4:], message.strip()


@pytest.mark.parametrize("row", BAD, ids=[row[0] for row in BAD])
def test_bad_input(row):
    name, code, exc, regex, isolate = row
    if isolate:
        got, message = _run_isolated(code)
        assert got == exc.__name__, f"expected {exc.__name__}, got {got}: {message}"
        assert re.search(regex, message), f"message {message!r} does not match {regex!r}"
    else:
        ns = {}
        exec(PRELUDE, ns)
        with pytest.raises(exc, match=regex):
            exec(code, ns)


def test_table_covers_every_function():
    # Every public function that takes arrays appears in the table.
    text = "\n".join(row[1] for row in BAD)
    for fn in ("conv_forward", "conv_backward_input", "conv_backward_weight",
               "conv_backward_bias", "maxpool_forward", "maxpool_backward", "set_num_threads"):
        assert f"ck.{fn}(" in text, fn
    assert convkern.get_num_threads() >= 1


# Huge parameter values that still describe a small, valid computation: convkern must
# either compute it (quickly, and correctly) or refuse it with a ValueError naming the
# parameter; never hang, overflow or crash. Each row computes ``r`` with the huge values
# and ``e`` with an equivalent small configuration. Isolated, with a time limit.
HUGE_BUT_VALID = [
    # Dilation 2**40 with padding 2**40: only the centre tap ever sees the input.
    ("conv-forward-huge-dilation",
     "r = ck.conv_forward(x, w, dilation=2**40, padding=2**40)\n"
     "e = ck.conv_forward(x, w[:, :, 1:2, 1:2])"),
    ("conv-input-grad-huge-dilation",
     "g = np.ones((2, 4, 8, 8))\n"
     "r = ck.conv_backward_input(g, w, x.shape, dilation=2**40, padding=2**40)\n"
     "e = ck.conv_backward_input(g, w[:, :, 1:2, 1:2], x.shape)"),
    ("conv-weight-grad-huge-dilation",
     "g = np.ones((2, 4, 8, 8))\n"
     "r = ck.conv_backward_weight(x, g, w.shape, dilation=2**40, padding=2**40)\n"
     "e = np.zeros(w.shape); e[:, :, 1:2, 1:2] = ck.conv_backward_weight(x, g, (4, 3, 1, 1))"),
    ("conv-huge-stride", "r = ck.conv_forward(x, w, stride=2**62)\n"
     "e = ck.conv_forward(x[:, :, :3, :3], w)"),
    # A window 2**40 + 1 tall padded by 2**39 covers every row: same as (11, 2) padded by 5.
    ("pool-huge-window",
     "r = ck.maxpool_forward(px, (2**40 + 1, 2), padding=(2**39, 0))\n"
     "e = ck.maxpool_forward(px, (11, 2), padding=(5, 0))"),
    ("pool-huge-stride", "r = ck.maxpool_forward(px, 2, stride=2**62)\n"
     "e = tuple(a[:, :, :1, :1] for a in ck.maxpool_forward(px, 2))"),
]

_HUGE_RUNNER = """
import sys
{prelude}
try:
{code}
except ValueError as exc:
    print("EXC ValueError")
    print(str(exc))
    sys.exit(0)
r = r if isinstance(r, tuple) else (r,)
e = e if isinstance(e, tuple) else (e,)
for a, b in zip(r, e):
    np.testing.assert_array_equal(a, b)
print("OK")
"""


@pytest.mark.parametrize("row", HUGE_BUT_VALID, ids=[row[0] for row in HUGE_BUT_VALID])
def test_huge_values_are_computed_or_refused(row):
    name, code = row
    script = _HUGE_RUNNER.format(prelude=PRELUDE, code=textwrap.indent(code, "    "))
    try:
        proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                              timeout=30)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{name}: no result and no error within 30 s (the kernel loops over a "
                    "huge window instead of clipping it to the input)")
    assert proc.returncode == 0, f"return code {proc.returncode}:\n{proc.stderr[-2000:]}"
    first, _, message = proc.stdout.partition("\n")
    if first == "EXC ValueError":
        assert re.search(r"stride|dilation|padding|kernel", message), message
    else:
        assert first == "OK", proc.stdout
