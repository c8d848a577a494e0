"""The channels-last paths' tap skipping (``channels_last_skip``,
``flipped_channels_last_skip``): the rows in (position, image) order, the steps of the
taps that read padding left out.  A skipped step adds a zero product, so the sums are
those of ``channels_last`` / ``flipped_channels_last``, bit for bit, for every thread
count; a non-finite weight (whose 0 * inf is NaN where its tap reads padding) sends the
tile back to every tap, so its NaN lands where the other paths put it.  (The
non-skipping paths are checked against the float64 reference in test_paths.py.)"""

import math

import numpy as np
import pytest

import convkern as ck
from convkern import _conv, _paths

DTYPES = [np.float32, np.float64]

# (x shape, weight shape, stride, padding, dilation): batches below, at and past the
# wide block's rows (a block of rows then spans two positions), one tile and several
# (more than 256 rows: the packed weight), 1-D, 2-D and 3-D, strides and dilations.
GEOMETRIES = [
    ((16, 24, 4, 4), (40, 24, 3, 3), 1, 1, 1),
    ((9, 20, 2, 2), (36, 20, 3, 3), 1, 1, 1),
    ((12, 16, 6, 6), (20, 16, 3, 3), 1, 1, 1),
    ((16, 12, 7, 5), (18, 12, 3, 3), 1, 2, 2),
    ((3, 10, 5, 5), (17, 10, 3, 3), 1, 1, 1),
    ((1, 8, 3, 24), (16, 8, 3, 3), 1, 1, 1),
    ((10, 8, 9, 9), (16, 8, 5, 5), 2, 2, 1),
    ((8, 6, 4, 4, 4), (16, 6, 3, 3, 3), 1, 1, 1),
    ((2, 8, 4, 4, 4), (12, 8, 3, 3, 3), 1, 1, 1),
    ((11, 16, 9), (24, 16, 5), 1, 2, 1),
]


@pytest.fixture
def all_threads(monkeypatch):
    """Let every call use all the threads it is given (small calls normally use fewer)."""
    monkeypatch.setattr("convkern.plan.threads_for", lambda work, grain: ck.get_num_threads())
    yield
    ck.set_num_threads(None)


def _ids(g):
    return "x{}-w{}-s{}p{}d{}".format(*g)


def _inputs(geometry, dtype, seed=0):
    x_shape, w_shape, stride, padding, dilation = geometry
    plan = ck.conv_plan(x_shape, w_shape, dtype=dtype, stride=stride, padding=padding,
                        dilation=dilation)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    gy = rng.standard_normal(plan.y_shape).astype(dtype)
    return plan, x, w, gy


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("geometry", GEOMETRIES, ids=[_ids(g) for g in GEOMETRIES])
def test_skipping_paths_have_the_bits_of_the_channels_last_paths(geometry, dtype,
                                                                 all_threads):
    """Forward (no bias, tied and untied bias, ReLU) and input gradient: the skipping
    path's result is the other's, bit for bit, at 1, 2 and 4 threads."""
    plan, x, w, gy = _inputs(geometry, dtype)
    rng = np.random.default_rng(1)
    valid_fwd = plan.valid_paths("forward")
    valid_bwi = plan.valid_paths("backward_input")
    assert "channels_last_skip" in valid_fwd
    checked = 0
    for nt in (1, 2, 4):
        ck.set_num_threads(nt)
        for bias_mode, act in ((None, None), ("tied", "relu"), ("untied", None)):
            b = None if bias_mode is None else rng.standard_normal(
                plan.y_shape[1] if bias_mode == "tied" else plan.y_shape[1:]).astype(dtype)
            kw = {} if bias_mode is None else {"bias": bias_mode}
            p = ck.conv_plan(x.shape, w.shape, dtype=dtype, stride=geometry[2],
                             padding=geometry[3], dilation=geometry[4], **kw)
            want = p.force(forward="channels_last").forward(x, w, b, activation=act)
            got = p.force(forward="channels_last_skip").forward(x, w, b, activation=act)
            assert got.tobytes() == want.tobytes(), (nt, bias_mode, act)
            checked += 1
        if "flipped_channels_last_skip" in valid_bwi:
            want = plan.force(backward_input="flipped_channels_last").backward_input(gy, w)
            got = plan.force(backward_input="flipped_channels_last_skip").backward_input(gy, w)
            assert got.tobytes() == want.tobytes(), nt
            checked += 1
    assert checked >= 9


@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan])
@pytest.mark.parametrize("geometry", GEOMETRIES[:4], ids=[_ids(g) for g in GEOMETRIES[:4]])
def test_a_non_finite_weight_puts_nan_where_the_other_paths_do(geometry, bad, all_threads):
    """A non-finite weight at a corner tap (which reads padding at the border
    positions): the forward's NaN and infinities land where channels_last puts them."""
    plan, x, w, _ = _inputs(geometry, np.float32)
    w = w.copy()
    w.reshape(w.shape[0], w.shape[1], -1)[w.shape[0] // 2, 1, 0] = bad
    for nt in (1, 2):
        ck.set_num_threads(nt)
        want = plan.force(forward="channels_last").forward(x, w)
        got = plan.force(forward="channels_last_skip").forward(x, w)
        assert not np.isfinite(want).all()
        np.testing.assert_array_equal(got, want)
        assert got.tobytes() == want.tobytes()


def test_the_planner_skips_where_the_padding_takes_enough_steps():
    """VGG's 4x4 and 2x2 stages at batch 16 (a third to a half of the steps read
    padding, 512 channels) skip on the forward and the input gradient, and so does
    ResNet's 7x7 stage at batch 4 (a block of rows spans two positions); fewer images
    than the wide block's rows over less than a reduction block of positions, few
    channels, or large images (little border) do not."""
    mr = _conv.kernel_info()["float32"]["gemm"][0]
    for spatial in ((4, 4), (2, 2)):
        plan = ck.conv_plan((16,) + (512,) + spatial, (512, 512, 3, 3), padding=1)
        assert plan.paths["forward"] == "channels_last_skip"
        assert plan.paths["backward_input"] == "flipped_channels_last_skip"
        assert plan._facts.tap_skip_steps >= _paths.TAP_SKIP_STEPS
    resnet = ck.conv_plan((4, 512, 7, 7), (512, 512, 3, 3), padding=1)
    assert resnet.paths["forward"] == "channels_last_skip"
    assert resnet.paths["backward_input"] == "flipped_channels_last_skip"
    few_images = ck.conv_plan((mr - 1, 512, 4, 4), (512, 512, 3, 3), padding=1)
    few_channels = ck.conv_plan((16, 32, 8, 8), (40, 32, 3, 3), padding=1)
    large = ck.conv_plan((16, 256, 32, 32), (256, 256, 3, 3), padding=1)
    for plan in (few_images, few_channels, large):
        assert "skip" not in plan.paths["forward"], plan
        assert "skip" not in plan.paths["backward_input"], plan
    # 4x4 with a 3x3 window and padding 1, blocks of one position (a multiple of mr
    # images): each axis reads padding in 2 of 12 (output, tap) pairs, so
    # 1 - (10 / 12) ** 2 of the K = 512 * 9 steps
    assert plan_steps((2 * mr, 512, 4, 4)) == pytest.approx((1 - (10 / 12) ** 2) * 512 * 9)


def plan_steps(x_shape):
    return ck.conv_plan(x_shape, (512, x_shape[1], 3, 3), padding=1)._facts.tap_skip_steps


def _counted_skip_steps(x_shape, k, padding, mr):
    """The steps per output value that the tap skipping's blocks of mr rows leave out,
    counted: rows in (position, image) order, positions in C order or, for at most
    SKIP_SORT_POSITIONS_MAX of them and when that keeps fewer steps, stably sorted by
    their taps (as a bit mask: bit t for tap t in C order); each block keeps the taps any
    of its positions reads the input at, and a tile (equal tiles of at most TILE_ROWS
    rows, whole blocks) whose blocks leave a tap unread keeps every tap (stride 1, no
    dilation)."""
    n, c, *spatial = x_shape
    taps = list(np.ndindex(*(k,) * len(spatial)))
    positions = list(np.ndindex(*[s + 2 * padding - k + 1 for s in spatial]))
    masks = [sum(1 << t for t, tap in enumerate(taps)
                 if all(0 <= o + i - padding < s for o, i, s in zip(pos, tap, spatial)))
             for pos in positions]
    rows = n * len(positions)
    tiles = math.ceil(rows / _conv.TILE_ROWS)
    tw = math.ceil(math.ceil(rows / tiles) / mr) * mr
    full = (1 << len(taps)) - 1

    def kept(order):
        total = 0
        for t0 in range(0, rows, tw):
            blocks = []
            for b0 in range(t0, min(rows, t0 + tw), mr):
                block = range(b0, min(rows, b0 + mr, t0 + tw))
                blocks.append((np.bitwise_or.reduce([masks[order[r // n]] for r in block]),
                               len(block)))
            seen = np.bitwise_or.reduce([m for m, _ in blocks])
            total += sum((bin(m).count("1") if seen == full else len(taps)) * size
                         for m, size in blocks)
        return total

    best = kept(list(range(len(positions))))
    if len(positions) <= _conv.SKIP_SORT_POSITIONS_MAX:
        best = min(best, kept(sorted(range(len(positions)), key=lambda p: masks[p])))
    return (len(taps) - best / rows) * c


@pytest.mark.parametrize("x_shape", [(1, 5, 4, 4), (2, 5, 4, 4, 4), (3, 7, 7, 7),
                                     (5, 3, 6, 6), (16, 4, 4, 4), (2, 6, 9), (4, 3, 8, 8),
                                     (2, 3, 8, 8, 8), (3, 2, 20, 20)])
def test_the_skipped_steps_are_those_of_the_blocks_of_rows(x_shape):
    """tap_skip_steps counts what the blocks of mr rows leave out: with fewer images
    than mr a block spans positions and keeps the union of their taps; positions
    sorted by their taps where that keeps fewer; tiles whose rows leave a tap unread
    keep every tap."""
    mr = _conv.kernel_info()["float32"]["gemm"][0]
    w_shape = (9, x_shape[1]) + (3,) * (len(x_shape) - 2)
    plan = ck.conv_plan(x_shape, w_shape, padding=1)
    assert plan._facts.tap_skip_steps == pytest.approx(_counted_skip_steps(x_shape, 3, 1, mr))
    # the input gradient's flipped correlation reads grad_y (w_shape[0] channels) with
    # padding 1 again: the same window over the same positions
    assert plan._facts.flipped_tap_skip_steps == pytest.approx(
        _counted_skip_steps((x_shape[0], w_shape[0]) + x_shape[2:], 3, 1, mr))
