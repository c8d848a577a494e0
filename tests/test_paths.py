"""Every kernel path of every pass, forced, on every geometry where it is valid.

The planner (convkern/_paths.py) picks one path per pass; which one depends on the
geometry and on the CPU's vector width, so the ordinary test matrix reaches only some
paths on a given machine.  Here each path is forced with ``ConvPlan.force`` on
channel-rich geometries (more filters per group than a GEMM block has rows, reductions
longer than four column blocks) of each kind (stride 1, strided, dilated, grouped,
depthwise, one filter per channel, pointwise, dense) in 1, 2 and 3-D and both dtypes,
and compared with the float64 reference and with PyTorch, then run at 1, 2 and 4
threads for identical bits.  A last test fails when
some path of the table is valid on none of these geometries (so never exercised).
tests/test_isa_matrix.py runs this file under every ISA the CPU has.
"""

import math

import numpy as np
import pytest
import reference as ref
from conftest import DTYPES, assert_close

import convkern as ck
from convkern import _conv, _paths

# kind: (channels per group, filters per group, groups, kernel, stride, padding, dilation)
KINDS = {
    "stride1": (20, 12, 1, 3, 1, 1, 1),
    "strided": (18, 10, 1, 3, 2, 1, 1),
    "dilated": (16, 9, 1, 3, 1, 2, 2),
    "grouped": (17, 6, 2, 3, 1, 1, 1),
    "depthwise": (1, 2, 24, 3, 1, 1, 1),
    # one filter per channel (MobileNet's), dilated, channels not a whole number of
    # vectors (tests/test_depthwise.py has the strided ones)
    "channelwise": (1, 1, 20, 3, 1, 2, 2),
    "pointwise": (24, 20, 2, 1, 1, 0, 1),
    # the window covers the whole unpadded input (kernel None: the input's spatial shape)
    "dense": (7, 13, 2, None, 1, 0, 1),
}
SPATIAL = {1: (41,), 2: (11, 13), 3: (6, 7, 5)}
N = 3

GEOMETRIES = [(kind, d, dt) for kind in KINDS for d in (1, 2, 3) for dt in DTYPES]


def _ids(g):
    kind, d, dt = g
    return f"{kind}-{d}d-{np.dtype(dt).name}"


def _geometry(kind, d):
    cg, fg, groups, k, s, p, dil = KINDS[kind]
    x_shape = (N, cg * groups) + SPATIAL[d]
    w_shape = (fg * groups, cg) + (SPATIAL[d] if k is None else (k,) * d)
    return x_shape, w_shape, dict(stride=s, padding=p, dilation=dil, groups=groups)


_cache = {}


def _case(kind, d, dtype):
    """Inputs, the plan, and the float64 reference of all passes (computed once)."""
    key = (kind, d, np.dtype(dtype).name)
    if key not in _cache:
        rng = np.random.default_rng(sum(map(ord, "".join(map(str, key)))))
        x_shape, w_shape, kw = _geometry(kind, d)
        plan = ck.conv_plan(x_shape, w_shape, dtype=dtype, bias="tied", **kw)
        x = rng.standard_normal(x_shape).astype(dtype)
        w = rng.standard_normal(w_shape).astype(dtype)
        b = rng.standard_normal(w_shape[0]).astype(dtype)
        gy = rng.standard_normal(plan.y_shape).astype(dtype)
        x64, w64, b64, gy64 = (a.astype(np.float64) for a in (x, w, b, gy))
        expected = {
            "forward": ref.conv_forward(x64, w64, b64, **kw),
            "backward_input": ref.conv_backward_input(gy64, w64, x_shape, **kw),
            "backward_weight": ref.conv_backward_weight(x64, gy64, w_shape, **kw),
            "backward_bias": ref.conv_backward_bias(gy64),
        }
        _cache[key] = (plan, (x, w, b, gy), expected, kw)
    return _cache[key]


def _run(plan, pass_name, arrays):
    x, w, b, gy = arrays
    if pass_name == "forward":
        return plan.forward(x, w, b)
    if pass_name == "backward_input":
        return plan.backward_input(gy, w)
    if pass_name == "backward_weight":
        return plan.backward_weight(x, gy)
    return plan.backward_bias(gy)


def _forced_cases():
    cases = []
    for g in GEOMETRIES:
        for pass_name, rows in _paths.TABLE.items():
            for row in rows:
                cases.append(pytest.param(g, pass_name, row.name,
                                          id=f"{_ids(g)}-{pass_name}-{row.name}"))
    return cases


@pytest.fixture
def all_threads(monkeypatch):
    """Let every call use all the threads it is given (small calls normally use fewer)."""
    monkeypatch.setattr("convkern.plan.threads_for", lambda work, grain: ck.get_num_threads())
    yield
    ck.set_num_threads(None)


def check_on_threads(run, want, dtype):
    """run() at 1, 2 and 4 threads: within tolerance of want, the same bits on each."""
    first = None
    for nt in (1, 2, 4):
        ck.set_num_threads(nt)
        got = run()
        assert_close(got, want, dtype)
        first = first or got.tobytes()
        assert got.tobytes() == first, f"other bits on {nt} threads"


@pytest.mark.parametrize("geometry, pass_name, path", _forced_cases())
def test_forced_path_matches_reference_for_any_thread_count(geometry, pass_name, path,
                                                            all_threads):
    kind, d, dtype = geometry
    plan, arrays, expected, _ = _case(kind, d, dtype)
    if path not in plan.valid_paths(pass_name):
        pytest.skip(f"{path} is not valid for this geometry")
    forced = plan.force(**{pass_name: path})
    assert forced.paths[pass_name] == path
    ck.set_num_threads(1)
    first = _run(forced, pass_name, arrays)
    assert_close(first, expected[pass_name], dtype, err_msg=f"{pass_name} on {path}")
    for n in (2, 4):
        ck.set_num_threads(n)
        again = _run(forced, pass_name, arrays)
        assert again.tobytes() == first.tobytes(), f"{path} gives other bits on {n} threads"


@pytest.mark.parametrize("geometry, path", [
    pytest.param(g, row.name, id=f"{_ids(g)}-{row.name}")
    for g in GEOMETRIES for row in _paths.TABLE["backward_weight"]])
def test_weight_path_fuses_the_bias_gradient(geometry, path, all_threads):
    kind, d, dtype = geometry
    plan, (x, w, b, gy), expected, _ = _case(kind, d, dtype)
    if path not in plan.valid_paths("backward_weight"):
        pytest.skip(f"{path} is not valid for this geometry")
    forced = plan.force(backward_weight=path)
    ck.set_num_threads(1)
    gw, gb = forced.backward_weight_bias(x, gy)
    assert gw.tobytes() == forced.backward_weight(x, gy).tobytes()
    assert_close(gb, expected["backward_bias"], dtype, err_msg=f"fused bias on {path}")
    for n in (2, 4):
        ck.set_num_threads(n)
        gw2, gb2 = forced.backward_weight_bias(x, gy)
        assert (gw2.tobytes(), gb2.tobytes()) == (gw.tobytes(), gb.tobytes())


@pytest.mark.torch
@pytest.mark.parametrize("geometry", GEOMETRIES, ids=[_ids(g) for g in GEOMETRIES])
def test_every_valid_path_matches_torch(geometry, torch):
    kind, d, dtype = geometry
    plan, (x, w, b, gy), _, kw = _case(kind, d, dtype)
    conv = getattr(torch.nn.functional, f"conv{d}d")
    xt = torch.from_numpy(x).requires_grad_(True)
    wt = torch.from_numpy(w).requires_grad_(True)
    bt = torch.from_numpy(b).requires_grad_(True)
    yt = conv(xt, wt, bt, stride=kw["stride"], padding=kw["padding"], dilation=kw["dilation"],
              groups=kw["groups"])
    yt.backward(torch.from_numpy(gy))
    torch_result = {
        "forward": yt.detach().numpy(),
        "backward_input": xt.grad.numpy(),
        "backward_weight": wt.grad.numpy(),
        "backward_bias": bt.grad.numpy(),
    }
    for pass_name in _paths.PASSES:
        for path in plan.valid_paths(pass_name):
            got = _run(plan.force(**{pass_name: path}), pass_name, (x, w, b, gy))
            assert_close(got, torch_result[pass_name].astype(np.float64), dtype,
                         err_msg=f"{pass_name} on {path} vs torch")


def test_every_path_of_the_table_is_exercised():
    """Each path of the table is valid on some geometry of this file's matrix, so the
    forced test above runs it (on every ISA, through tests/test_isa_matrix.py)."""
    seen = {p: set() for p in _paths.PASSES}
    for kind, d, dtype in GEOMETRIES:
        x_shape, w_shape, kw = _geometry(kind, d)
        plan = ck.conv_plan(x_shape, w_shape, dtype=dtype, **kw)
        for p in _paths.PASSES:
            seen[p].update(plan.valid_paths(p))
    for p, rows in _paths.TABLE.items():
        missing = {row.name for row in rows} - seen[p]
        assert not missing, f"{p} paths never valid in the matrix: {sorted(missing)}"


def test_the_default_choice_is_the_first_valid_and_preferred_row():
    for kind, d, dtype in GEOMETRIES:
        x_shape, w_shape, kw = _geometry(kind, d)
        plan = ck.conv_plan(x_shape, w_shape, dtype=dtype, **kw)
        for p in _paths.PASSES:
            assert plan.paths[p] in plan.valid_paths(p)
            assert plan.paths[p] == _paths.choose(p, plan._facts)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("spatial, filters", [((2, 2), 36), ((4, 4), 36), ((3,), 36),
                                              ((2, 2), 600)])
def test_small_images_in_a_batch_take_tiles_spanning_images(spatial, filters, dtype,
                                                            all_threads):
    """Channel-rich small images in a batch plan the image-spanning im2col tiles in all
    three passes (a batch of one does not), the forward reading the weight's rows in
    place and the input gradient taking col2im when the batch has few positions in all
    (one tile of them); the image-spanning paths are forced for the checks; both forwards
    match PyTorch's float64 result within the dtype's tolerance, with the same bits at 1,
    2 and 4 threads.  A batch of 11 puts 2 images in each weight-gradient chunk, and 600
    filters split its reduction rows into several cache blocks."""
    torch = pytest.importorskip("torch")
    k = len(spatial)
    x_shape, w_shape = (11, 48) + spatial, (filters, 48) + (3,) * k
    plan = ck.conv_plan(x_shape, w_shape, dtype=dtype, padding=1)
    few = 11 * math.prod(spatial) <= 2 * _conv.REDUCTION_BLOCK
    # (a reduction block of positions in all, over windows the slab would mostly waste,
    # take the channels-last gather instead: tested below)
    gather = (11 * math.prod(spatial) >= _conv.REDUCTION_BLOCK
              and plan._facts.slab_use < _paths.CHANNELS_LAST_SLAB_USE)
    # (windows whose padding takes enough of the steps skip it: tested in
    # test_tap_skipping.py)
    f = plan._facts
    skip = f.channels_last and _paths._channels_last_skip_pays(f)
    assert plan.paths["forward"] == ("channels_last_skip" if skip else
                                     "channels_last" if gather else
                                     "im2col_rows" if few else "im2col_images")
    # (few positions in all read the weight's rows in place when there are filters for
    # a long reduction, col2im_rows; else col2im)
    rows = "col2im_rows" if filters >= 4 * _conv.kernel_info()[np.dtype(dtype).name]["gemm"][1] \
        else "col2im"
    skip = f.flipped_channels_last and _paths._flipped_channels_last_skip_pays(f)
    assert plan.paths["backward_input"] == ("flipped_channels_last_skip" if skip else
                                            rows if few else "flipped_im2col_images")
    # few positions in all take the im2row weight gradient, others the channels-last
    # GEMM where its blocks fill; the image-spanning paths are forced below so that their
    # batch chunks and row blocks are checked
    wide = "channels_last_gemm" if _paths._channels_last_fills(plan._facts) \
        else "im2col_gemm_images"
    assert plan.paths["backward_weight"] == ("im2row_gemm" if few else wide)
    plan = plan.force(backward_input="flipped_im2col_images",
                      backward_weight="im2col_gemm_images")
    single = ck.conv_plan((1,) + x_shape[1:], w_shape, dtype=dtype, padding=1)
    assert single.paths["forward"] != "im2col_images"
    rng = np.random.default_rng(len(spatial) + spatial[0])
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    gy = rng.standard_normal(plan.y_shape).astype(dtype)
    conv = (torch.nn.functional.conv1d, torch.nn.functional.conv2d)[k - 1]
    grad_in = (torch.nn.grad.conv1d_input, torch.nn.grad.conv2d_input)[k - 1]
    grad_w = (torch.nn.grad.conv1d_weight, torch.nn.grad.conv2d_weight)[k - 1]
    tx, tw, tgy = (torch.from_numpy(a.astype(np.float64)) for a in (x, w, gy))
    want_y = conv(tx, tw, None, 1, 1).numpy()
    want_gx = grad_in(x_shape, tw, tgy, 1, 1).numpy()
    want_gw = grad_w(tx, w_shape, tgy, 1, 1).numpy()
    rows = plan.force(forward="im2col_rows")
    plan = plan.force(forward="im2col_images")
    results = []
    for nt in (1, 2, 4):
        ck.set_num_threads(nt)
        results.append((plan.forward(x, w), plan.backward_input(gy, w),
                        plan.backward_weight(x, gy), rows.forward(x, w)))
    for y, gx, gw, y_rows in results:
        assert_close(y, want_y, dtype, err_msg="forward vs torch")
        assert_close(gx, want_gx, dtype, err_msg="backward_input vs torch")
        np.testing.assert_array_equal(y, results[0][0])
        np.testing.assert_array_equal(y_rows, results[0][0])  # same reduction blocks
        assert_close(gw, want_gw, dtype, err_msg="backward_weight vs torch")
        np.testing.assert_array_equal(gx, results[0][1])
        np.testing.assert_array_equal(gw, results[0][2])


def test_strided_input_gradient_takes_col2im():
    """With the weight packs in parallel, col2im outran the phased slab path on every
    strided layer measured, small stride phases (8x8 images) or large (64x64): the phased
    path stays valid (forced by the tests) and is planned for none."""
    small = ck.conv_plan((64, 256, 8, 8), (512, 256, 3, 3), stride=2, padding=1)
    large = ck.conv_plan((16, 64, 64, 64), (64, 64, 3, 3), stride=2, padding=1)
    for plan in (small, large):
        assert "phased" in plan.valid_paths("backward_input")
        assert plan.paths["backward_input"] == "col2im"


def _five_d(geometry):
    """A geometry's shapes as the kernels take them: 2-D shapes get a depth of 1."""
    xs, ws, ys = (s if len(s) == 5 else s[:2] + (1,) + s[2:] for s in geometry[:3])
    pad3 = lambda t: t if len(t) == 3 else (1,) + t  # noqa: E731
    return (xs, ws, ys, geometry[3], pad3(geometry[4]), (0,) * (3 - len(geometry[5]))
            + geometry[5], pad3(geometry[6]))


def test_few_positions_read_the_weight_rows_in_place():
    """With few positions in all the forward reads the weight's rows in place (packing
    would copy the whole weight to read it a few times): on the slab (slab_rows) when
    the images have at least 4 slivers of positions, on im2col tiles (im2col_rows) when
    they have fewer or the slab is mostly halo (a 4x4x4 volume's), unless a reduction
    block of positions takes the channels-last gather; so does the input gradient
    (col2im_rows) with filters for a long reduction, unless a pointwise layer's flipped
    product runs in place or a 3-D window's block of positions takes the flipped
    channels-last correlation."""
    nr = _conv.kernel_info()["float32"]["gemm"][1]
    vl = _conv.kernel_info()["float32"]["vector"][0]
    for x_shape, w_shape in [((1, 256, 14, 14), (256, 256, 3, 3)),
                             ((1, 512, 7, 7), (512, 512, 3, 3)),
                             ((1, 512, 4, 4), (512, 512, 3, 3)),
                             ((4, 512, 7, 7), (512, 512, 3, 3)),
                             ((1, 128, 16, 16), (128, 128, 3, 3)),
                             ((1, 128, 4, 4, 4), (128, 128, 3, 3, 3)),
                             ((2, 128, 4, 4, 4), (128, 128, 3, 3, 3))]:
        k = len(x_shape) - 2
        geometry = (x_shape, w_shape, x_shape, 1, (1,) * k, (1,) * k, (1,) * k)
        use = _conv.slab_use(*_five_d(geometry), nr, vl)
        small = math.prod(x_shape[2:]) < 4 * nr or use < _paths.SLAB_USE_MIN
        # a reduction block of positions in all over windows the slab would partly waste,
        # or in rows of one vector, take the channels-last gather (which packs the weight)
        gather = (x_shape[0] * math.prod(x_shape[2:]) >= _conv.REDUCTION_BLOCK
                  and (use < _paths.CHANNELS_LAST_SLAB_USE
                       or (x_shape[-1] == vl and w_shape[0] >= nr)))
        # (and those whose padding takes enough steps skip it: test_tap_skipping.py)
        plan = ck.conv_plan(x_shape, w_shape, padding=1)
        skip = _paths._channels_last_skip_pays(plan._facts)
        assert plan.paths["forward"] == (
            "channels_last_skip" if skip else "channels_last" if gather else
            "im2col_rows" if small else "slab_rows"), x_shape
    # many positions: the packed slab
    assert ck.conv_plan((4, 128, 32, 32), (128, 128, 3, 3), padding=1).paths[
        "forward"] == "slab"
    assert ck.conv_plan((1, 256, 8, 8), (256, 256, 3, 3), padding=1).paths[
        "backward_input"] == "col2im_rows"
    # a 3-D window's few positions that fill a reduction block: the flipped channels-last
    # correlation, skipping the padding's taps (a 2-D window's keep col2im_rows)
    assert ck.conv_plan((2, 128, 4, 4, 4), (128, 128, 3, 3, 3), padding=1).paths[
        "backward_input"] == "flipped_channels_last_skip"
    assert ck.conv_plan((1, 128, 4, 4, 4), (128, 128, 3, 3, 3), padding=1).paths[
        "backward_input"] == "col2im_rows"
    if vl != 8:  # (rows of one vector take the flipped gather: below)
        assert ck.conv_plan((2, 128, 8, 8), (128, 128, 3, 3), padding=1).paths[
            "backward_input"] == "col2im_rows"
    # few filters for the reduction over them: col2im
    assert ck.conv_plan((1, 256, 8, 8), (16, 256, 3, 3), padding=1).paths[
        "backward_input"] == "col2im"
    # a pointwise projection takes its flipped product in place (over positions of
    # whole slivers: 7x7's ragged ones take the flipped gather, below), an expansion
    # over a small output (fewer positions than 4 slivers: 5x5 on every ISA) reads the
    # weight's rows
    assert ck.conv_plan((1, 576, 8, 8), (160, 576, 1, 1)).paths[
        "backward_input"] == "flipped_pointwise"
    assert ck.conv_plan((1, 320, 5, 5), (1280, 320, 1, 1)).paths[
        "backward_input"] == "col2im_rows"


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("out, stride, groups", [
    ((3, 8), 1, 1), ((16, 16), 1, 2), ((5, 32), 2, 1), ((4, 13), 1, 2),   # 2-D
    ((2, 3, 16), 1, 1), ((3, 4, 7), 2, 2),                                 # 3-D
    ((40,), 1, 1),                                                         # 1-D
])
def test_slab_with_the_weight_rows_in_place(out, stride, groups, dtype, all_threads):
    """The slab forward reading the weight's rows in place (slab_rows), forced, with a
    bias and ReLU: vector-row tiles written into y (widths of one vector or whole slivers
    on some ISA), padded-row tiles with halo columns, strides, groups of 7 filters (a
    ragged block of rows); the float64 reference within tolerance, the same bits at 1,
    2 and 4 threads."""
    kw = dict(stride=stride, padding=1, groups=groups)
    x_shape = (2, 5 * groups) + tuple((o - 1) * stride + 1 for o in out)
    w_shape = (7 * groups, 5) + (3,) * len(out)
    plan = ck.conv_plan(x_shape, w_shape, dtype=dtype, bias="tied", **kw)
    assert plan.y_shape[2:] == out
    forced = plan.force(forward="slab_rows")
    rng = np.random.default_rng(sum(out))
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    b = rng.standard_normal(w_shape[0]).astype(dtype)
    want = np.maximum(ref.conv_forward(*(a.astype(np.float64) for a in (x, w, b)), **kw), 0)
    check_on_threads(lambda: forced.forward(x, w, b, activation="relu"), want, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("vectors", [5, 7])
@pytest.mark.parametrize("stride", [1, 2])
def test_output_rows_of_whole_vectors_but_not_whole_slivers(vectors, stride, dtype,
                                                            all_threads):
    """Output rows of an odd number of vectors (a strided stem's 112 columns: 7 vectors
    of 16 on AVX-512) are vector rows too where a sliver is two vectors, one ending an
    output row and the next starting the next row: the slab computes no halo column
    (slab_use 1), forward on the packed slab and with the weight's rows in place, and
    the flipped input gradient over input rows of that width; with a bias and ReLU, the
    float64 reference within tolerance, the same bits at 1, 2 and 4 threads."""
    info = _conv.kernel_info()[np.dtype(dtype).name]
    nr, vl = info["gemm"][1], info["vector"][0]
    rows = nr == 2 * vl  # (AVX2's and AVX-512's; the baseline's block is 3 vectors)
    ow = vectors * vl
    kw = dict(stride=stride, padding=1)
    x_shape, w_shape = (2, 3, 6 * stride, ow * stride), (11, 3, 3, 3)
    plan = ck.conv_plan(x_shape, w_shape, dtype=dtype, bias="tied", **kw)
    assert plan.y_shape[2:] == (6, ow)
    geometry = (x_shape, w_shape, plan.y_shape, 1, (stride,) * 2, (1,) * 2, (1,) * 2)
    assert (_conv.slab_use(*_five_d(geometry), nr, vl) == 1.0) == rows
    rng = np.random.default_rng(ow + stride)
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    b = rng.standard_normal(w_shape[0]).astype(dtype)
    want = np.maximum(ref.conv_forward(*(a.astype(np.float64) for a in (x, w, b)), **kw), 0)
    for path in ("slab", "slab_rows"):
        forced = plan.force(forward=path)
        check_on_threads(lambda p=forced: p.forward(x, w, b, activation="relu"), want, dtype)
    if stride == 1:
        # the flipped correlation's outputs are the input's rows, ow wide
        gy = rng.standard_normal(plan.y_shape).astype(dtype)
        assert (_conv.flipped_slab_use(*_five_d(geometry), nr, vl) == 1.0) == rows
        want = ref.conv_backward_input(gy.astype(np.float64), w.astype(np.float64),
                                       x_shape, **kw)
        forced = plan.force(backward_input="flipped")
        check_on_threads(lambda: forced.backward_input(gy, w), want, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("tiles", [2, 3])
def test_a_batch_of_one_splits_its_vector_row_tiles_or_its_filters(tiles, dtype,
                                                                   all_threads):
    """One image of `tiles` vector-row tiles (rows of two slivers, each tile as many rows
    as the slab path's 512 columns hold): split by tiles among threads they share out
    evenly among, by filters otherwise; forward and flipped input gradient within
    tolerance of the float64 reference, the same bits at 1, 2 and 4 threads."""
    nr = _conv.kernel_info()[np.dtype(dtype).name]["gemm"][1]
    width = 2 * nr
    x_shape, w_shape = (1, 16, tiles * max(1, 512 // width), width), (20, 16, 3, 3)
    plan = ck.conv_plan(x_shape, w_shape, dtype=dtype, padding=1)
    rng = np.random.default_rng(tiles)
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    gy = rng.standard_normal(plan.y_shape).astype(dtype)
    x64, w64 = x.astype(np.float64), w.astype(np.float64)
    forced = plan.force(forward="slab", backward_input="flipped")
    check_on_threads(lambda: forced.forward(x, w), ref.conv_forward(x64, w64, padding=1),
                     dtype)
    want = ref.conv_backward_input(gy.astype(np.float64), w64, x_shape, padding=1)
    check_on_threads(lambda: forced.backward_input(gy, w), want, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("path", ["slab_rows", "slab", "im2col"])
def test_filter_splits_of_a_small_call_each_have_filters(path, dtype, all_threads):
    """A small call splits its filters one part per thread: 5 blocks of filters on 4
    threads make 3 splits of 2 blocks, not 4 (the last would start past the filters and
    clear a negative number of bytes, which AddressSanitizer caught); the float64
    reference within tolerance, the same bits at 1, 2 and 4 threads."""
    mr = _conv.kernel_info()[np.dtype(dtype).name]["gemm"][0]
    x_shape, w_shape = (1, 3, 6, 6), (5 * mr - 1, 3, 3, 3)
    forced = ck.conv_plan(x_shape, w_shape, dtype=dtype, padding=1).force(forward=path)
    rng = np.random.default_rng(mr)
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    want = ref.conv_forward(x.astype(np.float64), w.astype(np.float64), padding=1)
    check_on_threads(lambda: forced.forward(x, w), want, dtype)


def test_pointwise_rows_that_alias_in_l1_are_copied():
    """The in-place pointwise paths read one row per channel, P positions apart: 4096
    float32 samples (16 KiB apart, one L1 set per line offset) with 128 channels are
    copied (slab: 10 or more rows per way on every L1 of 12 ways or fewer); 56x56
    images (12.25 KiB apart, 16 sets) keep the in-place paths."""
    signal = ck.conv_plan((1, 128, 4096), (128, 128, 1))
    image = ck.conv_plan((1, 96, 56, 56), (96, 96, 1, 1))
    assert "pointwise" in signal.valid_paths("forward")
    assert signal.paths["forward"] != "pointwise"
    assert signal.paths["backward_input"] != "flipped_pointwise"
    assert image.paths["forward"] == "pointwise"
    assert image.paths["backward_input"] == "flipped_pointwise"
    # an expansion over fewer positions than 4 slivers (5x5 on every ISA) reduces over
    # many filters per position
    last = ck.conv_plan((1, 320, 5, 5), (1280, 320, 1, 1))
    assert last.paths["backward_input"] != "flipped_pointwise"


def test_the_l1_aliasing_rule_reads_the_caches_ways(monkeypatch):
    """Rows alias when more than ALIAS_ROWS_PER_WAY of them per way of the L1 share its
    sets: 64 channels of 4096 samples (16 KiB apart, one set per line offset) are
    in-place rows on a 12-way L1 and copied on an 8-way one, as are the 64 filters of
    MobileNet's 32x32 expansion (4 KiB apart) in its input gradient; its 32 channels
    stay in place on both."""
    assert 1 <= _paths.l1_ways() <= 64
    wavenet = ck.conv_plan((4, 64, 4096), (64, 64, 1))._facts
    mobile = ck.conv_plan((32, 32, 32, 32), (64, 32, 1, 1))._facts
    for ways, aliases in ((8, True), (12, False)):
        monkeypatch.setattr(_paths, "_L1_WAYS", ways)
        assert _paths._aliased_rows(wavenet, 64, 64) == aliases
        assert _paths._aliased_rows(mobile, 64, 32) == aliases
        assert not _paths._aliased_rows(mobile, 32, 64)


def test_one_small_image_takes_im2col_tiles_and_col2im_instead_of_the_slab():
    """A single image whose output has fewer than 4 column slivers (4x4 here) would spend
    a third of the slab path's columns on halo: the forward takes
    im2col tiles (the forward reading the weight's rows in place: one tile sweeps them,
    so packing them would only copy them), the weight gradient rows of patches (16
    positions in all), the input gradient col2im with the weight's rows in place; a 32x32
    image keeps the slab paths, but for the weight gradient, where one image gives the
    slab path little to split among threads, the channels-last GEMM."""
    small = ck.conv_plan((1, 256, 4, 4), (512, 256, 3, 3), padding=1)
    large = ck.conv_plan((1, 64, 32, 32), (64, 64, 3, 3), padding=1)
    assert (small.paths["forward"], small.paths["backward_input"],
            small.paths["backward_weight"]) == ("im2col_rows", "col2im_rows", "im2row_gemm")
    assert (large.paths["forward"], large.paths["backward_input"],
            large.paths["backward_weight"]) == ("slab", "flipped", "channels_last_gemm")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n, spatial, window", [
    (1, (2, 2), 3), (16, (2, 2), 3), (3, (5, 7), 3), (2, (3, 3, 3), 3),
    # pointwise: the rows of patches are x's own rows, transposed (grad_y read in place
    # at batch 1, copied image by image otherwise)
    (1, (7, 7), 1), (3, (4, 5), 1)])
def test_few_positions_in_all_take_the_im2row_weight_gradient(n, spatial, window, dtype,
                                                             all_threads):
    """At most two reduction blocks of output positions in the whole call: the weight
    gradient (and the fused bias gradient) on rows of patches, written once in its own
    layout (planned with at most half a block of them over one or two axes, forced
    otherwise), and the
    input gradient on col2im with the weight's rows in place; the float64 reference
    within tolerance, the same bits at 1, 2 and 4 threads."""
    k = len(spatial)
    pad = window // 2
    x_shape, w_shape = (n, 40) + spatial, (70, 20) + (window,) * k
    plan = ck.conv_plan(x_shape, w_shape, dtype=dtype, padding=pad, groups=2)
    if n * math.prod(spatial) <= _conv.REDUCTION_BLOCK // 2 and k < 3:
        assert plan.paths["backward_weight"] == "im2row_gemm"
    plan = plan.force(backward_weight="im2row_gemm")
    rng = np.random.default_rng(n)
    x = rng.standard_normal(x_shape).astype(dtype)
    gy = rng.standard_normal(plan.y_shape).astype(dtype)
    x64, gy64 = x.astype(np.float64), gy.astype(np.float64)
    want = ref.conv_backward_weight(x64, gy64, w_shape, padding=pad, groups=2)
    w = rng.standard_normal(w_shape).astype(dtype)
    want_gx = ref.conv_backward_input(gy64, w.astype(np.float64), x_shape, padding=pad, groups=2)
    rows = plan.force(backward_input="col2im_rows")
    first = None
    for nt in (1, 2, 4):
        ck.set_num_threads(nt)
        gw, gb = plan.backward_weight_bias(x, gy)
        gx = rows.backward_input(gy, w)
        assert_close(gw, want, dtype)
        assert_close(gb, ref.conv_backward_bias(gy64), dtype)
        assert_close(gx, want_gx, dtype)
        first = first or (gw.tobytes(), gb.tobytes(), gx.tobytes())
        assert (gw.tobytes(), gb.tobytes(), gx.tobytes()) == first


def test_weight_gradient_of_a_pointwise_projection_takes_im2col():
    """A 1x1 layer with fewer filters than channels and many positions per image
    (MobileNet's projections): im2col is a copy of x and its GEMM puts the channels on the
    micro-kernel's rows; an expansion (more filters than channels) over a few positions
    in all takes the rows of patches (x's rows transposed), at batch 1 and over a few
    images; a projection over a few positions per image too, over 14x14 the
    channels-last GEMM."""
    project = ck.conv_plan((1, 384, 28, 28), (64, 384, 1, 1))
    expand = ck.conv_plan((1, 64, 14, 14), (384, 64, 1, 1))
    assert project.paths["backward_weight"] == "im2col_gemm"
    assert expand.paths["backward_weight"] == "im2row_gemm"
    assert ck.conv_plan((4, 160, 7, 7), (960, 160, 1, 1)).paths["backward_weight"] == "im2row_gemm"
    assert ck.conv_plan((4, 576, 7, 7), (160, 576, 1, 1)).paths["backward_weight"] == "im2row_gemm"
    assert (ck.conv_plan((1, 384, 14, 14), (64, 384, 1, 1)).paths["backward_weight"]
            == "channels_last_gemm")


def test_short_reductions_over_many_positions_take_the_dot_weight_gradient():
    """At most two reduction blocks of Cg * prod(K) rows over at least four blocks of
    positions per image: rows of patches against grad_y's rows in place (im2col_dot),
    for 1x1 layers, 1-D layers and 3-channel stems alike; a few positions per image keep
    the GEMMs.  With 64-byte vectors a channel-rich layer that is not pointwise and has
    a long reduction (64 channels x 2 taps), or a stem's long window (147 rows) at a
    training batch, takes a GEMM path instead (the gathered one where its rule holds), and
    a 64-row 1x1 expansion over few positions per image (no dots) the channels-last GEMM
    (its filters fill the rows), not the dots; so does a batch of 1x1 layers whose
    channels and filters both span 4 vectors, where one such image, or a projection to
    fewer filters, keeps the dots."""
    vl = _conv.kernel_info()["float32"]["vector"][0]
    wide = vl * 4 > 32
    for x_shape, w_shape, dots in [((1, 144, 56, 56), (24, 144, 1, 1), True),
                                   ((1, 64, 4096), (128, 64, 2), not wide),
                                   ((4, 4 * vl, 4096), (8 * vl, 4 * vl, 1), not wide),
                                   ((1, 4 * vl, 4096), (8 * vl, 4 * vl, 1), True),
                                   ((4, 8 * vl, 4096), (2 * vl, 8 * vl, 1), True),
                                   ((4, 3, 224, 224), (32, 3, 3, 3), True),
                                   ((1, 3, 224, 224), (64, 3, 7, 7), True),
                                   ((4, 3, 224, 224), (64, 3, 7, 7), not wide)]:
        plan = ck.conv_plan(x_shape, w_shape, padding=0)
        if _paths._gather_wgrad_pays(plan._facts):   # (the 7x7 stem's runs of 21 channels)
            assert plan.paths["backward_weight"] == "gather_gemm", x_shape
            continue
        assert (plan.paths["backward_weight"] == "im2col_dot") == dots, x_shape
    few = ck.conv_plan((1, 128, 16, 16), (256, 128, 1, 1), stride=2)
    assert few.paths["backward_weight"] != "im2col_dot"
    expand = ck.conv_plan((4, 64, 14, 14), (384, 64, 1, 1))
    assert expand.paths["backward_weight"] == "channels_last_gemm"


def test_a_batch_of_small_few_channel_images_takes_the_slab_dots():
    """Where the dots pay, a batch of images that each fit one dot tile (LeNet-5's C1,
    the A-E suite's D) takes the slab dots (the input read in place, no im2col copy of
    each value per tap), also before the depthwise rows for windows past 3x3; a batch of
    one and images larger than a tile keep im2col's dots, and a single image of few
    filters, or a 3x3 window, the rows.  (8 filters that fill AVX2's vector take the
    gathered GEMM in a batch.)"""
    few = _conv.kernel_info()["float32"]["gemm"][0] - 2   # fewer filters than a block's rows
    vl = _conv.kernel_info()["float32"]["vector"][0]
    gather = 0.8 * vl <= 8 <= vl
    assert ck.conv_plan((64, 1, 28, 28), (8, 1, 5, 5)).paths["backward_weight"] == (
        "gather_gemm" if gather else "slab_dot")
    assert ck.conv_plan((64, 1, 32, 32), (few, 1, 5, 5)).paths["backward_weight"] == "slab_dot"
    assert ck.conv_plan((1, 1, 28, 28), (8, 1, 5, 5)).paths["backward_weight"] == "im2col_dot"
    assert ck.conv_plan((1, 1, 32, 32), (few, 1, 5, 5)).paths["backward_weight"] == "depthwise"
    big = ck.conv_plan((4, 1, 64, 64), (8, 1, 5, 5))       # 3600 positions per image
    assert big.paths["backward_weight"] == ("gather_gemm" if gather else "im2col_dot")
    three = ck.conv_plan((64, 1, 28, 28), (few, 1, 3, 3))  # the rows' own 3x3 kernel
    assert three.paths["backward_weight"] == "depthwise"


def check_weight_gradient(forced, x, gy, w_shape, kw, dtype):
    """A forced plan's weight gradient and fused bias gradient: the float64 reference
    within the dtype's tolerance, the same bits at 1, 2 and 4 threads."""
    want = ref.conv_backward_weight(x.astype(np.float64), gy.astype(np.float64), w_shape, **kw)
    first = None
    for nt in (1, 2, 4):
        ck.set_num_threads(nt)
        gw, gb = forced.backward_weight_bias(x, gy)
        assert_close(gw, want, dtype)
        assert_close(gb, ref.conv_backward_bias(gy.astype(np.float64)), dtype)
        first = first or (gw.tobytes(), gb.tobytes())
        assert (gw.tobytes(), gb.tobytes()) == first


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", [
    # (x shape, weight shape, stride, padding, groups)
    ((1, 5, 50, 50), (7, 5, 1, 1), 1, 0, 1),        # pointwise: x's rows read in place
    ((3, 6, 47, 45), (4, 3, 1, 1), 1, 0, 2),        # ... grouped, tiles across images
    ((1, 3, 101, 99), (9, 3, 3, 3), 2, 1, 1),       # a 3-channel stem, one image
    ((2, 2, 70, 70), (5, 2, 3, 3), 1, 1, 1),        # 3 tiles per image, 6 in all
])
def test_dot_weight_gradient_splits_one_image_into_tiles(case, dtype, all_threads):
    """The im2col dot weight gradient (and its fused bias gradient), forced, where one
    image is several tiles of positions: with fewer than 4 tasks of whole images its
    chunks are runs of (image, tile) units, so that a batch of one splits over the
    threads (the grouped case keeps image chunks); pointwise layers read x's rows in
    place.  The float64 reference within tolerance, the same bits at 1, 2 and 4 threads."""
    x_shape, w_shape, stride, padding, groups = case
    kw = dict(stride=stride, padding=padding, groups=groups)
    plan = ck.conv_plan(x_shape, w_shape, dtype=dtype, bias="tied", **kw)
    assert math.prod(plan.y_shape[2:]) > 2048        # more than one tile (DOT_TILE)
    forced = plan.force(backward_weight="im2col_dot")
    rng = np.random.default_rng(x_shape[2])
    x = rng.standard_normal(x_shape).astype(dtype)
    gy = rng.standard_normal(plan.y_shape).astype(dtype)
    check_weight_gradient(forced, x, gy, w_shape, kw, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", [
    ((1, 3, 33, 31), (8, 3, 3, 3), 1, 1, 1),        # VGG-like stem, ragged last sliver
    ((1, 3, 40, 40), (5, 3, 3, 3), 2, 1, 1),        # strided stem
    ((1, 6, 30, 30), (4, 3, 3, 3), 1, 1, 2),        # two groups: split at 4 threads only
    ((1, 1, 10, 12, 14), (4, 1, 3, 3, 3), 1, 1, 1),  # one channel, 3-D, 7 tiles
    ((2, 40, 20, 20), (6, 40, 3, 3), 1, 1, 1),      # many rows: the whole-tile copy
])
def test_col2im_of_few_channels_splits_over_tiles(case, dtype, all_threads):
    """col2im where an image has too few channel chunks to share among the threads (3
    one-channel tasks on 2 threads) splits its GEMMs over tiles of positions and then
    its col2im over channels; tasks of few rows copy grad_y a sliver at a time.  The
    float64 reference within tolerance, the same bits at 1, 2 and 4 threads."""
    x_shape, w_shape, stride, padding, groups = case
    kw = dict(stride=stride, padding=padding, groups=groups)
    plan = ck.conv_plan(x_shape, w_shape, dtype=dtype, **kw).force(backward_input="col2im")
    rng = np.random.default_rng(x_shape[2])
    w = rng.standard_normal(w_shape).astype(dtype)
    gy = rng.standard_normal(plan.y_shape).astype(dtype)
    want = ref.conv_backward_input(gy.astype(np.float64), w.astype(np.float64), x_shape,
                                   **kw)
    check_on_threads(lambda: plan.backward_input(gy, w), want, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", [
    # (x shape, weight shape, groups): at most 4 filters (forward) or channels (input
    # gradient) per group take the 4-row block
    ((1, 16, 20, 37), (2, 16, 1, 1), 1),            # a 2-class head, ragged sliver
    ((2, 3, 9, 71), (40, 3, 1, 1), 1),              # 3 channels: the input gradient's
    ((3, 8, 13, 11), (8, 2, 1, 1), 4),              # 2 filters and channels per group
    ((2, 6, 10, 10), (5, 6, 1, 1), 1),              # 5 filters: the wide block
])
def test_pointwise_paths_of_few_rows_take_the_narrow_block(case, dtype, all_threads):
    """The in-place pointwise forward and the flipped pointwise input gradient, forced,
    where a group has few filters (forward) or few channels (input gradient): the
    4-row block instead of the wide one.  The float64 reference within tolerance, the
    same bits at 1, 2 and 4 threads."""
    x_shape, w_shape, groups = case
    plan = ck.conv_plan(x_shape, w_shape, dtype=dtype, bias="tied", groups=groups)
    rng = np.random.default_rng(x_shape[1])
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    b = rng.standard_normal(w_shape[0]).astype(dtype)
    gy = rng.standard_normal(plan.y_shape).astype(dtype)
    x64, w64, b64 = (a.astype(np.float64) for a in (x, w, b))
    forward = plan.force(forward="pointwise")
    check_on_threads(lambda: forward.forward(x, w, b, activation="relu"),
                     np.maximum(ref.conv_forward(x64, w64, b64, groups=groups), 0), dtype)
    flipped = plan.force(backward_input="flipped_pointwise")
    check_on_threads(lambda: flipped.backward_input(gy, w),
                     ref.conv_backward_input(gy.astype(np.float64), w64, x_shape,
                                             groups=groups), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("x_shape, w_shape, groups", [
    ((1, 300, 7, 9), (21, 300, 1, 1), 1),   # 3 reduction blocks, a ragged block of rows
    ((1, 40, 14, 14), (70, 20, 1, 1), 2),   # 196 positions: a ragged sliver, groups
    ((2, 40, 14, 14), (70, 20, 1, 1), 2),   # a batch: the weight packed once, up front
])
def test_pointwise_paths_have_the_bits_of_the_other_paths(x_shape, w_shape, groups, dtype,
                                                          all_threads):
    """The in-place pointwise forward and flipped input gradient pack each block of the
    weight in the task that uses it when one image fills one tile (else once, up front):
    the bits of the im2col forward and of the flipped slab (the same reduction blocks in
    the same order), with a tied bias and ReLU in the last block's stores or an untied
    bias after, at 1, 2 and 4 threads; the float64 reference within tolerance."""
    rng = np.random.default_rng(w_shape[0] + x_shape[0])
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    for bias in ("tied", "untied"):
        plan = ck.conv_plan(x_shape, w_shape, dtype=dtype, bias=bias, groups=groups)
        b = rng.standard_normal(w_shape[:1] if bias == "tied" else plan.y_shape[1:])
        b = b.astype(dtype)
        gy = rng.standard_normal(plan.y_shape).astype(dtype)
        in_place = plan.force(forward="pointwise", backward_input="flipped_pointwise")
        other = plan.force(forward="im2col", backward_input="flipped")
        for n in (1, 2, 4):
            ck.set_num_threads(n)
            np.testing.assert_array_equal(in_place.forward(x, w, b, activation="relu"),
                                          other.forward(x, w, b, activation="relu"))
            np.testing.assert_array_equal(in_place.backward_input(gy, w),
                                          other.backward_input(gy, w))
    x64, w64 = x.astype(np.float64), w.astype(np.float64)
    assert_close(in_place.forward(x, w), ref.conv_forward(x64, w64, groups=groups), dtype)
    assert_close(in_place.backward_input(gy, w), ref.conv_backward_input(
        gy.astype(np.float64), w64, x_shape, groups=groups), dtype)


def test_small_images_of_whole_slivers_keep_per_image_tiles():
    """A batch of small images takes the image-spanning im2col forward when an image's
    positions end in a ragged sliver, and the per-image tiles when they fill whole
    slivers (no ragged sliver to avoid)."""
    nr = _conv.kernel_info()["float32"]["gemm"][1]
    whole = ck.conv_plan((32, 64, nr + 2), (64, 64, 3))
    ragged = ck.conv_plan((32, 64, nr + 1), (64, 64, 3))
    assert whole.paths["forward"] == "im2col"
    assert ragged.paths["forward"] == "im2col_images"


def test_a_batch_whose_blocks_fill_takes_the_channels_last_weight_gradient():
    """Images (2-D and 3-D windows, small partial or large) whose filters fill 4 row
    blocks and whose runs fill their column slivers to three quarters take the
    channels-last GEMM, batch or not; a strided 1x1 window (its im2col a plain strided
    copy), a batch of 2-D images with few positions in all (im2row's; a batch of volumes
    takes it), runs that fill less (the gathered gradient's) and fewer filters than 4
    row blocks (unless they waste the other paths' columns) do not."""
    mr, nr = _conv.kernel_info()["float32"]["gemm"]
    f = -(-4 * mr // nr) * nr          # rows for 4 blocks, whole slivers of columns
    c = 4 * nr                          # slivers of channels, a long reduction (no dots)
    for x_shape, w_shape in [((4, c, 32, 32), (f, c, 3, 3)),
                             ((1, c, 32, 32), (f, c, 3, 3)),
                             ((16, c, 16, 16), (8 * f, c, 3, 3)),
                             ((2, c, 8, 8, 8), (f, c, 3, 3, 3))]:
        plan = ck.conv_plan(x_shape, w_shape, padding=1)
        assert plan.paths["backward_weight"] == "channels_last_gemm", (x_shape, w_shape)
    strided = ck.conv_plan((16, c, 32, 32), (f, c, 1, 1), stride=2)
    assert strided.paths["backward_weight"] != "channels_last_gemm"
    few = ck.conv_plan((4, c, 32, 32), (4 * mr - 1, c, 3, 3), padding=1)
    assert ((few.paths["backward_weight"] == "channels_last_gemm")
            == _paths._filter_columns_wasted(few._facts))
    batch = ck.conv_plan((16, c, 4, 4), (f, c, 3, 3), padding=1)   # 256 positions in all
    assert batch.paths["backward_weight"] == "im2row_gemm"
    volumes = ck.conv_plan((4, c, 4, 4, 4), (f, c, 3, 3, 3), padding=1)
    assert volumes.paths["backward_weight"] == "channels_last_gemm"
    # runs of 3 taps of nr / 2 channels fill 2 slivers to three quarters, of 5 taps of
    # nr / 4 to 0.625: both take the gathered weight gradient (filters in the vectors)
    # when they have its rows (or fewer that fill 4/5 of their row blocks, the filters
    # filling theirs), the first the channels-last GEMM otherwise
    for taps, channels, fills in [(3, nr // 2, True), (5, nr // 4, False)]:
        plan = ck.conv_plan((4, channels, 16, 16), (f, channels, taps, taps), padding=1)
        path = plan.paths["backward_weight"]
        rows = channels * taps * taps
        if rows >= _paths.GATHER_WGRAD_ROWS or (rows / (-(-rows // mr) * mr) >= 0.8
                                                 and f / (-(-f // nr) * nr) >= 0.8):
            assert path == "gather_gemm", taps
        else:
            assert (path == "channels_last_gemm") == fills, taps


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", [
    # (x shape, weight shape, stride, padding, dilation, groups)
    ((3, 5, 9, 11), (26, 5, 3, 3), 1, 1, 1, 1),            # runs of 15: one ragged sliver
    ((2, 12, 7, 13), (26, 6, 3, 2), (2, 1), (0, 1), 1, 2),  # grouped, strided, odd window
    ((2, 8, 41), (30, 8, 3), 2, 3, 3),                     # dilated: one run per tap
    ((1, 6, 5, 4, 6), (24, 6, 3, 1, 2), 1, (1, 0, 1), (2, 1, 1), 1),  # 3-D, KW dilated 1
    ((4, 16, 3, 3), (40, 16, 3, 3), 1, 2, 1, 1),           # padding past the input
])
def test_channels_last_weight_gradient_on_ragged_runs(case, dtype, all_threads):
    """The channels-last weight gradient (and its fused bias gradient), forced: runs that
    end mid-sliver (their last sliver reads past the run into dropped columns), strides,
    groups, dilation (one run per tap), 3-D, padding wider than the window's reach; the
    float64 reference within tolerance, the same bits at 1, 2 and 4 threads."""
    x_shape, w_shape, stride, padding, dilation, groups = (case + (1,))[:6]
    kw = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    plan = ck.conv_plan(x_shape, w_shape, dtype=dtype, bias="tied", **kw)
    assert "channels_last_gemm" in plan.valid_paths("backward_weight")
    forced = plan.force(backward_weight="channels_last_gemm")
    rng = np.random.default_rng(len(x_shape) + w_shape[0])
    x = rng.standard_normal(x_shape).astype(dtype)
    gy = rng.standard_normal(plan.y_shape).astype(dtype)
    check_weight_gradient(forced, x, gy, w_shape, kw, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", [
    # (x shape, weight shape, stride, padding, dilation, groups): an image's slab and
    # packed grad_y beyond CHANNELS_LAST_SUB_BYTES, so its output rows go in bands
    ((1, 64, 70, 33), (8, 64, 3, 3), 1, 1, 1, 1),           # 2-D, a shorter last band
    ((2, 40, 61, 29), (12, 40, 3, 3), 2, 2, 2, 1),          # strided, dilated, 2 images
    ((1, 80, 50, 40), (10, 40, 3, 3), 1, (0, 1), 1, 2),     # grouped, unpadded rows
    ((1, 16, 21, 18, 17), (8, 16, 3, 3, 3), 1, 1, 1, 1),    # 3-D: bands of depth
    ((1, 24, 3, 40, 30), (6, 24, 3, 3, 3), 1, (0, 1, 1)),   # one output plane: of height
    ((3, 64, 60, 20), (9, 64, 5, 3), (1, 2), (3, 1), 1, 1),  # padding past the reach
    ((1, 64, 3000), (16, 64, 3), 1, 1, 1, 1),               # 1-D: bands of positions
    ((2, 48, 2500), (12, 48, 2), 1, 8, 8, 1),               # dilated, 2 signals
    ((1, 40, 2001), (10, 40, 5), 2, 2, 1, 1),               # strided
    ((1, 32, 3, 4000), (8, 32, 3, 3), 1, (0, 1), 1, 1),      # one output row: of width
])
def test_channels_last_weight_gradient_in_bands(case, dtype, all_threads):
    """The channels-last weight gradient (and its fused bias gradient), forced, where an
    image is too large for one sub-chunk: bands of its output rows, each with the input
    rows its windows read (padding at the first and last bands), as units of the
    chunks.  The float64 reference within tolerance, the same bits at 1, 2 and 4
    threads."""
    x_shape, w_shape, stride, padding, dilation, groups = (case + (1, 1))[:6]
    kw = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    plan = ck.conv_plan(x_shape, w_shape, dtype=dtype, bias="tied", **kw)
    channels = w_shape[1] * groups
    slab = channels * math.prod(x_shape[2:]) * np.dtype(dtype).itemsize
    assert slab > _conv.CHANNELS_LAST_RUN_BYTES         # bands (the slab alone outgrows)
    forced = plan.force(backward_weight="channels_last_gemm")
    rng = np.random.default_rng(sum(x_shape))
    x = rng.standard_normal(x_shape).astype(dtype)
    gy = rng.standard_normal(plan.y_shape).astype(dtype)
    check_weight_gradient(forced, x, gy, w_shape, kw, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", [
    # (x shape, weight shape, stride, padding): output rows of at least 16 columns, so
    # im2col unrolls x in place (no padded copy)
    ((2, 3, 9, 50), (4, 3, 2, 2), 2, (1, 0)),         # k2 s2: padded rows of both taps
    ((1, 2, 6, 48), (5, 2, 3, 2), 2, (1, 0)),
    ((2, 3, 7, 41), (4, 3, 3, 3), 2, 0),              # kw 0, 1 paired, kw 2 alone
    ((1, 2, 9, 70), (3, 2, 2, 4), (1, 2), (0, 1)),    # padded columns: no pair
    ((1, 2, 9, 70), (3, 2, 2, 5), (1, 2), (2, 0)),
    ((3, 4, 40), (5, 4, 2), 2, 0),                    # 1-D
    ((1, 2, 5, 6, 34), (3, 2, 2, 2, 2), 2, 0),        # 3-D k2 s2
    ((1, 2, 17, 600), (3, 2, 2, 2), 2, 0),            # rows cut by the tiles
])
def test_stride_two_taps_unrolled_in_pairs(case, dtype, all_threads):
    """im2col unrolls a stride-2 window's neighbouring taps kw, kw + 1 in one pass over
    their input where both read whole output rows (strided_copy.h's split), and tap by
    tap elsewhere (padded columns, rows cut by a tile)."""
    check_im2col_paths(case, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", [
    # (x shape, weight shape, stride, padding[, dilation]): output rows shorter than 16
    ((2, 3, 8, 8), (4, 3, 2, 2), 2, 0),               # k2 s2: the whole input
    ((1, 2, 9, 9), (3, 2, 2, 2), 2, 0),               # ... its last row and column unread
    ((2, 2, 10, 10), (3, 2, 3, 3), 1, 0),             # a valid 3x3
    ((2, 2, 9, 9), (3, 2, 3, 3), 1, 0, 2),            # dilated
    ((2, 2, 6, 6, 6), (3, 2, 2, 2, 2), 2, 0),         # 3-D k2 s2
    ((2, 2, 6, 6, 6), (3, 2, 3, 3, 3), 1, (0, 1, 0)),  # padded along one axis: a copy
])
def test_small_images_that_read_no_padding_unroll_in_place(case, dtype, all_threads):
    """A small image (rows shorter than 16) unrolls from (and col2im adds into) a
    zero-padded copy of each channel, or, where the window reads no padding, the
    channel itself."""
    check_im2col_paths(case, dtype)


def check_im2col_paths(case, dtype):
    """The forward and weight gradient on im2col tiles and the input gradient by col2im
    (im2col's adjoint), forced, against the float64 reference, the same bits at 1, 2 and
    4 threads (and the forward the slab's)."""
    x_shape, w_shape, stride, padding, dilation = (case + (1,))[:5]
    kw = dict(stride=stride, padding=padding, dilation=dilation)
    plan = ck.conv_plan(x_shape, w_shape, dtype=dtype, bias="tied", **kw)
    rng = np.random.default_rng(w_shape[0] + x_shape[-1])
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    gy = rng.standard_normal(plan.y_shape).astype(dtype)
    want = ref.conv_forward(x.astype(np.float64), w.astype(np.float64), None, **kw)
    slab = plan.force(forward="slab").forward(x, w)
    for nt in (1, 2, 4):
        ck.set_num_threads(nt)
        y = plan.force(forward="im2col").forward(x, w)
        assert_close(y, want, dtype)
        assert y.tobytes() == slab.tobytes()
    for path in ("im2col_gemm", "im2col_dot"):
        check_weight_gradient(plan.force(backward_weight=path), x, gy, w_shape, kw, dtype)
    want = ref.conv_backward_input(gy.astype(np.float64), w.astype(np.float64), x_shape, **kw)
    for path in ("col2im", "col2im_rows"):
        if path not in plan.valid_paths("backward_input"):
            continue
        first = None
        for nt in (1, 2, 4):
            ck.set_num_threads(nt)
            gx = plan.force(backward_input=path).backward_input(gy, w)
            assert_close(gx, want, dtype, err_msg=path)
            first = first or gx.tobytes()
            assert gx.tobytes() == first


def test_disjoint_windows_take_im2col_and_pointwise_heads_stay_in_place():
    """Windows that do not overlap (kernel 2, stride 2: the adjoint of a transposed
    convolution) read every input once: im2col's gather, not the slab's stride phases;
    a 1x1 head with two filters runs in place like any pointwise layer."""
    for x_shape, w_shape in [((1, 64, 64, 64), (128, 64, 2, 2)),
                             ((2, 32, 16, 16, 16), (64, 32, 2, 2, 2))]:
        plan = ck.conv_plan(x_shape, w_shape, stride=2)
        assert "slab" in plan.valid_paths("forward")
        assert plan.paths["forward"] in ("im2col", "im2col_rows", "im2col_images")
    head = ck.conv_plan((1, 32, 128, 128), (2, 32, 1, 1))
    assert head.paths["forward"] == "pointwise"


@pytest.mark.parametrize("dtype", DTYPES)
def test_a_1x1_window_padded_after_the_input_is_not_pointwise(dtype):
    """A 1x1 window with padding after the input only (the output one position longer
    than the input) is no plain GEMM over the arrays in place: the in-place paths are not
    valid, and every path of every pass matches the float64 reference (a found fuzz case:
    the forced pointwise forward read past the input, and im2row took x's rows as its
    rows of patches)."""
    x_shape, w_shape = (2, 9, 7), (3, 3, 1)
    kw = dict(padding=((0, 1),), dilation=2, groups=3)
    plan = ck.conv_plan(x_shape, w_shape, dtype=dtype, **kw)
    assert "pointwise" not in plan.valid_paths("forward")
    assert "flipped_pointwise" not in plan.valid_paths("backward_input")
    rng = np.random.default_rng(7)
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    gy = rng.standard_normal(plan.y_shape).astype(dtype)
    x64, w64, gy64 = (a.astype(np.float64) for a in (x, w, gy))
    want = {"forward": ref.conv_forward(x64, w64, None, **kw),
            "backward_input": ref.conv_backward_input(gy64, w64, x_shape, **kw),
            "backward_weight": ref.conv_backward_weight(x64, gy64, w_shape, **kw)}
    run = {"forward": lambda q: q.forward(x, w), "backward_input": lambda q: q.backward_input(gy, w),
           "backward_weight": lambda q: q.backward_weight(x, gy)}
    for pass_name, expected in want.items():
        for path in plan.valid_paths(pass_name):
            assert_close(run[pass_name](plan.force(**{pass_name: path})), expected, dtype)


def test_a_pointwise_forward_over_a_small_output_stays_in_place_when_x_outweighs_the_weight():
    """Few positions per image: im2col_rows copies x (C x N * P values) to read the
    weight (C x F) in place, the pointwise path reads x in place; with more positions in
    all than filters (MobileNetV2's 7x7 projections at batch 4) x is the larger."""
    project = ck.conv_plan((4, 576, 7, 7), (160, 576, 1, 1))
    expand = ck.conv_plan((4, 160, 7, 7), (960, 160, 1, 1))
    one = ck.conv_plan((1, 576, 7, 7), (160, 576, 1, 1))
    assert project.paths["forward"] == "pointwise"
    # 49 positions are a small output for a GEMM block of 16 or more columns (a narrower
    # ISA's wider output keeps x in place anyway)
    if _conv.kernel_info()["float32"]["gemm"][1] >= 16:
        assert expand.paths["forward"] == "im2col_rows"
        assert one.paths["forward"] == "im2col_rows"


def test_a_slab_of_mostly_halo_gives_way_to_im2col():
    """A 4x4x4 output's slab tile computes twice as many columns as outputs (the rest
    halo): the forward takes the channels-last gather (3-D U-Net's bottleneck), which
    skips the padding's taps, at batch 1 and 2; a tile of whole vector rows (8x8x8 on
    AVX2) computes no halo and keeps the slab."""
    small = ((2, 128, 4, 4, 4), (128, 128, 3, 3, 3), (2, 128, 4, 4, 4))
    nr, vl = 16, 8
    geometry = (small[0], small[1], small[2], 1, (1, 1, 1), (1, 1, 1), (1, 1, 1))
    assert _conv.slab_use(*geometry, nr, vl) <= 0.5
    rows = ((2, 64, 8, 8, 8), (64, 64, 3, 3, 3), (2, 64, 8, 8, 8), 1, (1, 1, 1), (1, 1, 1),
            (1, 1, 1))
    assert _conv.slab_use(*rows, nr, vl) == 1.0
    info = _conv.kernel_info()["float32"]
    if _conv.slab_use(*geometry, info["gemm"][1], info["vector"][0]) < _paths.SLAB_USE_MIN:
        # (a narrower ISA's slab tiles may use more of their columns); the padding
        # takes over a third of the steps, which the gather skips
        for n in (1, 2):
            plan = ck.conv_plan((n,) + small[0][1:], small[1], padding=1)
            assert plan._facts.tap_skip_steps >= _paths.TAP_SKIP_STEPS
            assert plan.paths["forward"] == "channels_last_skip"


def test_one_block_of_channels_over_a_long_reduction_takes_the_flipped_slab():
    """The input gradient's flipped product has Cg rows: one whole block of them (as in
    LeNet-5's C3, 6 channels on AVX2) over a long reduction (16 filters x 25 taps) takes
    the flipped slab at a training batch; a stem's 1-3 channels (part of a block) keep
    col2im.  (An 18x18 input: C3's 10x10 output is a small output for AVX-512's wider
    blocks, which takes col2im.)"""
    mr = _conv.kernel_info()["float32"]["gemm"][0]
    c3 = ck.conv_plan((64, mr, 18, 18), (16, mr, 5, 5))
    stem = ck.conv_plan((16, 3, 32, 32), (64, 3, 3, 3), padding=1)
    assert c3.paths["backward_input"] == "flipped"
    assert stem.paths["backward_input"] == "col2im"


def test_weight_gradient_rules_follow_the_block_shape():
    """Rules that read the micro-kernel's block, so that a wider ISA plans by its own
    shape: filters that use less than three quarters of their slivers of columns (16
    filters on AVX-512's 32, or on the baseline's 12) take the channels-last GEMM, whose
    rows are the filters, or in a batch, when they fill one vector and the channels-last
    runs waste their slivers (AVX-512), the gathered GEMM, while 16 filters on AVX2's 16
    columns keep the slab GEMM;
    windows that do not overlap (k2 s2) never take the slab weight gradients; a flipped
    slab that would be mostly halo (an 8x8x8 volume's 3x3x3 correlation on AVX-512's 32
    columns) gives way to unrolled tiles; and small images' weight gradients take the
    channels-last GEMM, but not a strided 1x1 window's."""
    info = _conv.kernel_info()["float32"]
    mr, nr = info["gemm"]
    vl = info["vector"][0]
    wasted = ck.conv_plan((2, 16, 32, 32, 32), (16, 16, 3, 3, 3), padding=1)
    want = "channels_last_gemm" if 16 < 0.75 * (-(-16 // nr) * nr) else "slab_gemm"
    # runs of 3 * 16 channels that waste their slivers, 16 filters that fill one vector,
    # a batch: the gathered weight gradient (at batch 1 the channels-last GEMM)
    if 48 < 0.8 * (-(-48 // nr) * nr) and 0.8 * vl <= 16 <= vl:
        single = ck.conv_plan((1, 16, 32, 32, 32), (16, 16, 3, 3, 3), padding=1)
        assert single.paths["backward_weight"] == want
        want = "gather_gemm"
    assert wasted.paths["backward_weight"] == want
    full = ck.conv_plan((2, 16, 32, 32, 32), (nr, 16, 3, 3, 3), padding=1)
    assert full.paths["backward_weight"] in ("slab_gemm", "channels_last_gemm", "gather_gemm")
    for x_shape, w_shape in [((4, 128, 32, 32), (64, 128, 2, 2)),
                             ((2, 32, 16, 16, 16), (16, 32, 2, 2, 2))]:
        plan = ck.conv_plan(x_shape, w_shape, stride=2)
        assert plan.paths["backward_weight"] not in ("slab_gemm", "slab_dot"), x_shape
    geometry = ((2, 64, 8, 8, 8), (64, 64, 3, 3, 3), (2, 64, 8, 8, 8), 1, (1, 1, 1),
                (1, 1, 1), (1, 1, 1))
    plan = ck.conv_plan((2, 64, 8, 8, 8), (64, 64, 3, 3, 3), padding=1)
    if _conv.flipped_slab_use(*geometry, nr, vl) < _paths.SLAB_USE_MIN:
        assert plan.paths["backward_input"] != "flipped"
    assert 0 < _conv.flipped_slab_use(*geometry, nr, vl) <= 1
    assert _conv.flipped_slab_use(*((2, 4, 9, 9, 9), (4, 4, 3, 3, 3), (2, 4, 4, 4, 4), 1,
                                    (2, 2, 2), (0, 0, 0), (1, 1, 1)), nr, vl) == 0
    # small images whose blocks fill take the channels-last GEMM whatever the partial's
    # size; a 1x1 window's do not
    side = 4 if 16 < 4 * nr else 2   # a small image here: fewer than 4 slivers of positions
    filters = -(-4 * mr // nr) * nr   # rows for 4 blocks, whole slivers of columns
    small = ck.conv_plan((32, 4 * nr, side, side), (filters, 4 * nr, 3, 3), padding=1)
    assert small.paths["backward_weight"] == "channels_last_gemm"
    one = ck.conv_plan((32, 4 * nr, 2 * side, 2 * side), (filters, 4 * nr, 1, 1), stride=2)
    assert one.paths["backward_weight"] != "channels_last_gemm"


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("x_shape, w_shape", [
    ((3, 256, 4, 4), (40, 256, 3, 3)),        # 1 KiB positions: a padded channel stride
    ((2, 24, 5, 4, 6), (33, 24, 3, 2, 3)),    # 3-D, ragged blocks of rows and filters
    ((2, 20, 19), (36, 20, 5)),               # 1-D
    ((2, 16, 12, 12), (40, 16, 3, 3)),        # two tiles of positions: the weight packed once
])
def test_channels_last_gather_has_the_bits_of_the_other_correlations(x_shape, w_shape, dtype,
                                                                     all_threads):
    """The channels-last forward and flipped input gradient sum each output over the same
    k order and reduction blocks as the im2col forward and the flipped slab: the same
    bits, with a tied or untied bias and ReLU applied after the transpose, at 1, 2 and 4
    threads; and the float64 reference within tolerance.  Positions 1 KiB apart (256
    float32 channels) take a padded channel stride in the copy.  A forward with one tile
    of positions packs the weight block by block in its tasks (a ragged last sliver of
    filters zero-filled there), one with more packs it once, up front."""
    kw = dict(padding=1, stride=1, dilation=1)
    rng = np.random.default_rng(sum(x_shape))
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    plan = ck.conv_plan(x_shape, w_shape, dtype=dtype, bias="tied", **kw)
    gy = rng.standard_normal(plan.y_shape).astype(dtype)
    b = rng.standard_normal(w_shape[0]).astype(dtype)
    untied_plan = ck.conv_plan(x_shape, w_shape, dtype=dtype, bias="untied", **kw)
    bu = rng.standard_normal(untied_plan.y_shape[1:]).astype(dtype)
    gather = plan.force(forward="channels_last", backward_input="flipped_channels_last")
    other = plan.force(forward="im2col", backward_input="flipped")
    gather_u = untied_plan.force(forward="channels_last")
    other_u = untied_plan.force(forward="im2col")
    assert_close(gather.forward(x, w, b), ref.conv_forward(
        x.astype(np.float64), w.astype(np.float64), b.astype(np.float64), **kw), dtype)
    assert_close(gather.backward_input(gy, w), ref.conv_backward_input(
        gy.astype(np.float64), w.astype(np.float64), x_shape, **kw), dtype)
    for n in (1, 2, 4):
        ck.set_num_threads(n)
        np.testing.assert_array_equal(gather.forward(x, w, b, activation="relu"),
                                      other.forward(x, w, b, activation="relu"))
        np.testing.assert_array_equal(gather_u.forward(x, w, bu), other_u.forward(x, w, bu))
        np.testing.assert_array_equal(gather.backward_input(gy, w),
                                      other.backward_input(gy, w))


def test_channels_last_gather_is_planned_where_the_slab_and_tiles_waste():
    """Channel-rich layers with a reduction block of positions in all, whose slab would
    compute more than a tenth of halo, take the channels-last gather for the forward and
    the flipped input gradient (3-D U-Net's 8^3 volumes, VGG's 8x8 layers at a training
    batch); a slab at full use in rows of several vectors (VGG's 32x32 layers), a batch-1
    4x4 image (few positions: the weight's rows in place), a disjoint k2 s2 window, a
    1x1 layer and a group of fewer filters than a vector do not."""
    unet3d = ck.conv_plan((2, 64, 8, 8, 8), (64, 64, 3, 3, 3), padding=1)
    vgg8 = ck.conv_plan((16, 256, 8, 8), (256, 256, 3, 3), padding=1)
    for plan in (unet3d, vgg8):
        if plan._facts.slab_use < _paths.CHANNELS_LAST_SLAB_USE:  # (the ISA's slivers)
            # (skipping the padding's taps where they take enough steps)
            skip = "_skip" if plan._facts.tap_skip_steps >= _paths.TAP_SKIP_STEPS else ""
            assert plan.paths["forward"] == "channels_last" + skip
            assert plan.paths["backward_input"] == "flipped_channels_last" + skip
    vgg32 = ck.conv_plan((16, 64, 32, 32), (64, 64, 3, 3), padding=1)
    if vgg32._facts.slab_use >= _paths.CHANNELS_LAST_SLAB_USE and 32 != vgg32._facts.vl:
        assert vgg32.paths["forward"] == "slab"
    assert ck.conv_plan((1, 512, 4, 4), (512, 512, 3, 3), padding=1).paths[
        "forward"] == "im2col_rows"
    assert ck.conv_plan((16, 128, 16, 16), (64, 128, 2, 2), stride=2).paths[
        "forward"] != "channels_last"
    assert ck.conv_plan((16, 256, 8, 8), (256, 256, 1, 1)).paths["forward"] != "channels_last"
    # its vectors are filters: fewer than one vector of them (8 on AVX-512) do not
    d = ck.conv_plan((64, 1, 28, 28), (8, 1, 5, 5))
    if 8 < d._facts.vl:
        assert d.paths["forward"] != "channels_last"


def test_rows_of_one_vector_take_the_channels_last_gather():
    """Images whose rows are one vector long (16x16 and 16^3 on AVX-512, 8x8 on AVX2) make
    the slab's vector rows short: the channels-last gather takes the forward and the
    flipped input gradient where its vectors (the filters, the channels) fill a GEMM
    block, at a training batch and with few positions in all (a reduction block of
    them); a group of fewer keeps the slab."""
    info = _conv.kernel_info()["float32"]
    vl, nr = info["vector"][0], info["gemm"][1]
    if vl < 8:
        pytest.skip("rows of fewer than 8 values are small images (other rules)")
    few = -(-_conv.REDUCTION_BLOCK // (vl * vl))  # images of few positions in all
    for x_shape, f in [((16, nr, vl, vl), 4 * nr), ((few, 4 * nr, vl, vl), 4 * nr),
                       ((2, nr, vl, vl, vl), nr)]:
        k = len(x_shape) - 2
        plan = ck.conv_plan(x_shape, (f, x_shape[1]) + (3,) * k, padding=1)
        assert plan._facts.slab_use == 1.0, x_shape  # the slab computes no halo
        assert plan.paths["forward"] == "channels_last", x_shape
        assert plan.paths["backward_input"] == "flipped_channels_last", x_shape
    # channels or filters of one vector: the slab and the flipped slab
    narrow = ck.conv_plan((2, vl, vl, vl, vl), (2 * nr, vl, 3, 3, 3), padding=1)
    assert narrow.paths["backward_input"] == "flipped"
    narrow = ck.conv_plan((2, 2 * nr, vl, vl, vl), (vl, 2 * nr, 3, 3, 3), padding=1)
    assert narrow.paths["forward"] == "slab"


def test_a_projection_over_ragged_slivers_takes_the_flipped_channels_last_gather():
    """A pointwise projection over a small output whose positions fill mr-row blocks
    better than nr-column slivers (49 positions on AVX2 and AVX-512): its input gradient
    takes the flipped channels-last correlation; an expansion of the same output, and the
    projection over 14x14 (whole-enough slivers), do not."""
    mr, nr = _conv.kernel_info()["float32"]["gemm"]
    if 49 >= 4 * nr or not 49 / (-(-49 // mr) * mr) > 49 / (-(-49 // nr) * nr) + 0.1:
        pytest.skip("49 positions are no small output here, or fill its columns as well")
    for n in (1, 4):
        plan = ck.conv_plan((n, 960, 7, 7), (320, 960, 1, 1))
        assert plan.paths["backward_input"] == "flipped_channels_last", n
        expansion = ck.conv_plan((n, 160, 7, 7), (960, 160, 1, 1))
        assert expansion.paths["backward_input"] != "flipped_channels_last", n
        wide = ck.conv_plan((n, 576, 14, 14), (96, 576, 1, 1))
        assert wide.paths["backward_input"] == "flipped_pointwise", n


def test_three_axis_windows_whose_vectors_fill_a_block_take_the_channels_last_gather():
    """A 3x3x3 window over a volume whose rows are whole slivers (the slab at full use):
    the channels-last gather takes the forward and the flipped input gradient where its
    vectors (the filters, the channels) fill a GEMM block and the reduced channels span
    two blocks of rows; a one-channel volume and the same layer over a 2-D window keep
    the slab."""
    mr, nr = _conv.kernel_info()["float32"]["gemm"]
    wide = max(nr, 2 * mr)
    x_shape = (2, wide, 4, 4, 2 * nr)
    plan = ck.conv_plan(x_shape, (wide, wide, 3, 3, 3), padding=1)
    assert plan._facts.slab_use == 1.0 and plan._facts.flipped_slab_use == 1.0
    assert plan.paths["forward"] == "channels_last"
    assert plan.paths["backward_input"] == "flipped_channels_last"
    one_channel = ck.conv_plan((2, 1) + x_shape[2:], (wide, 1, 3, 3, 3), padding=1)
    assert one_channel.paths["forward"] == "slab"
    flat = ck.conv_plan((2, wide, 16, 2 * nr), (wide, wide, 3, 3), padding=1)
    assert flat.paths["forward"] == "slab" and flat.paths["backward_input"] == "flipped"


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("x_shape, w_shape", [
    ((1, 300, 2, 2), (40, 300, 3, 3)),    # 4 positions: one-vector blocks, rows streamed
    ((1, 150, 7, 7), (21, 150, 3, 3)),    # 49 positions: a few slivers, rows streamed
    ((4, 90, 5, 5), (12, 90, 3, 3)),      # 12 filters: the one-vector channels-last gather
])
def test_weight_rows_and_narrow_blocks_have_the_bits_of_im2col(x_shape, w_shape, dtype,
                                                               all_threads):
    """The forward on the weight's rows in place streams each block of rows through
    several reduction blocks at a time (and with few enough positions runs blocks one
    vector wide), and the channels-last gather of a group with at most one vector of
    filters runs one-vector blocks: every output still sums the same reduction blocks in
    the same order as im2col, so the same bits at 1, 2 and 4 threads, and the float64
    reference within tolerance."""
    rng = np.random.default_rng(x_shape[1])
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    b = rng.standard_normal(w_shape[0]).astype(dtype)
    plan = ck.conv_plan(x_shape, w_shape, dtype=dtype, bias="tied", padding=1)
    want = plan.force(forward="im2col").forward(x, w, b, activation="relu")
    assert_close(want, np.maximum(ref.conv_forward(
        x.astype(np.float64), w.astype(np.float64), b.astype(np.float64), padding=1), 0),
        dtype)
    for n in (1, 2, 4):
        ck.set_num_threads(n)
        for path in ("im2col_rows", "channels_last"):
            got = plan.force(forward=path).forward(x, w, b, activation="relu")
            np.testing.assert_array_equal(got, want, err_msg=f"{path} on {n} threads")


@pytest.mark.parametrize("dtype", DTYPES)
def test_gathered_weight_gradient_over_runs_and_chunks(dtype, all_threads):
    """The gathered weight gradient cuts each image's positions into runs and the batch
    into chunks (both functions of the shapes): with 2500 positions per image, 3 images
    and 40 filters (ragged slivers), a strided 5x5 window on 3 channels, it matches the
    float64 reference with the fused bias, with the same bits at 1, 2 and 4 threads.  A
    7x7 stem plans it, and so does a batch of 3x3 RGB stems (27 rows, 4/5 of their row
    blocks), but neither one such image whose grad_y outgrows a run (each row range of
    a batch of one transposes all of it) nor a 1-channel stem (9 rows)."""
    rng = np.random.default_rng(7)
    x_shape, w_shape = (3, 3, 101, 101), (40, 3, 5, 5)
    kw = dict(stride=2, padding=2)
    plan = ck.conv_plan(x_shape, w_shape, dtype=dtype, bias="tied", **kw)
    assert "gather_gemm" in plan.valid_paths("backward_weight")
    x = rng.standard_normal(x_shape).astype(dtype)
    gy = rng.standard_normal(plan.y_shape).astype(dtype)
    forced = plan.force(backward_weight="gather_gemm")
    want = ref.conv_backward_weight(x.astype(np.float64), gy.astype(np.float64), w_shape, **kw)
    results = []
    for n in (1, 2, 4):
        ck.set_num_threads(n)
        results.append(forced.backward_weight_bias(x, gy))
    assert_close(results[0][0], want, dtype)
    assert_close(results[0][1], gy.astype(np.float64).sum(axis=(0, 2, 3)), dtype)
    for gw, gb in results[1:]:
        np.testing.assert_array_equal(gw, results[0][0])
        np.testing.assert_array_equal(gb, results[0][1])
    stem7 = ck.conv_plan((4, 3, 224, 224), (64, 3, 7, 7), stride=2, padding=3)
    stem3 = ck.conv_plan((4, 3, 224, 224), (32, 3, 3, 3), stride=2, padding=1)
    one3 = ck.conv_plan((1, 3, 224, 224), (32, 3, 3, 3), stride=2, padding=1)
    gray3 = ck.conv_plan((4, 1, 224, 224), (32, 1, 3, 3), stride=2, padding=1)
    f = stem3._facts

    def use(n, block):
        return n / (-(-n // block) * block)

    if use(21, f.nr) < 0.8:   # runs of 21 channels that underfill their slivers
        assert stem7.paths["backward_weight"] == "gather_gemm"
    if (use(9, f.nr) < 0.8 and use(27, f.mr) >= 0.8 and f.filters >= 2 * f.vl
            and f.gather_image_bytes <= _paths.l2_bytes() // 2):
        assert stem3.paths["backward_weight"] == "gather_gemm"
    assert one3.paths["backward_weight"] != "gather_gemm"
    assert gray3.paths["backward_weight"] != "gather_gemm"


def test_the_gathered_few_rows_stream_an_image_from_half_the_l2(monkeypatch):
    """Under GATHER_WGRAD_ROWS rows, a batch gathers only while an image's channels-last
    copy and run of transposed grad_y (gather_image_bytes) fit half the running CPU's L2
    (read at run time): a 3x3 RGB stem over 224x224 (about 860 KB in float32) gathers
    with a 2 MiB L2 and takes another path with a 1 MiB one, where 64x64 images (about
    180 KB) gather with either.  The 7x7 stem's 147 rows gather whatever the L2."""
    assert (64 << 10) <= _paths.l2_bytes() <= (1 << 30)
    f = ck.conv_plan((4, 3, 224, 224), (32, 3, 3, 3), stride=2, padding=1)._facts
    assert 700_000 < f.gather_image_bytes < 1_000_000
    if not (f.reduction / (-(-f.reduction // f.mr) * f.mr) >= 0.8
            and f.filters >= 2 * f.vl and f.channel_run < 0.8 * f.nr):
        pytest.skip("the 3x3 stem's rows or filters do not fill this ISA's blocks")
    stem7_paths = set()
    for l2, big in ((2 << 20, True), (1 << 20, False)):
        monkeypatch.setattr(_paths, "_L2_BYTES", l2)
        stem = ck.conv_plan((4, 3, 224, 224), (32, 3, 3, 3), stride=2, padding=1)
        small = ck.conv_plan((4, 3, 64, 64), (32, 3, 3, 3), stride=2, padding=1)
        stem7 = ck.conv_plan((4, 3, 224, 224), (64, 3, 7, 7), stride=2, padding=3)
        assert (stem.paths["backward_weight"] == "gather_gemm") == big
        assert small.paths["backward_weight"] == "gather_gemm"
        stem7_paths.add(stem7.paths["backward_weight"])
    assert len(stem7_paths) == 1
