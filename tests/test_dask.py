"""convkern.dask: chunked convolution, pooling and inference equal the in-memory calls.

Skipped when the ``dask`` extra is missing (a failure when CONVKERN_REQUIRE_EXTRAS=1, as
in CI). The cluster tests run a ``distributed.LocalCluster`` of two worker processes with
one thread each, on the loopback interface.
"""

import pickle
import subprocess
import sys

import numpy as np
import pytest
from conftest import import_extra

dask = import_extra("dask", "dask")
da = import_extra("dask.array", "dask")
distributed = import_extra("distributed", "dask")

import convkern as ck  # noqa: E402
from convkern import dask as ckd  # noqa: E402


@pytest.fixture(scope="module")
def client():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  host="127.0.0.1", dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        yield client


# 3-D volumes in 2 to 4 chunks per spatial axis, with strides that do not divide the
# chunks, dilation and asymmetric padding (test_random_geometries_and_chunks_are_bitwise
# covers chunks smaller than the halo, on the synchronous scheduler).
VOLUME_CASES = [
    dict(x=(2, 3, 23, 20, 17), chunks=(1, 3, 9, 8, 7), w=(4, 3, 3, 2, 3), bias="tied",
         stride=(2, 1, 3), dilation=(1, 2, 2), padding=((2, 0), (1, 3), (0, 1)), groups=1),
    dict(x=(1, 4, 19, 21, 18), chunks=(1, 4, 7, 6, 9), w=(6, 2, 2, 3, 3), bias="untied",
         stride=(1, 3, 2), dilation=(2, 1, 1), padding=((0, 3), (2, 2), (1, 0)), groups=2),
]


def volume_case(case, dtype, rng):
    x = rng.standard_normal(case["x"]).astype(dtype)
    w = rng.standard_normal(case["w"]).astype(dtype)
    geometry = {k: case[k] for k in ("stride", "dilation", "padding", "groups")}
    out_shape = ck.conv_forward(x, w, **geometry).shape
    bias = {"tied": out_shape[1:2], "untied": out_shape[1:]}[case["bias"]]
    return x, w, rng.standard_normal(bias).astype(dtype), geometry


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", VOLUME_CASES)
def test_conv_over_chunked_volume_on_cluster_is_bitwise(client, case, dtype, rng):
    x, w, b, geometry = volume_case(case, dtype, rng)
    expected = ck.conv_forward(x, w, b, **geometry)
    y = ckd.conv_forward(da.from_array(x, chunks=case["chunks"]), w, b, **geometry)
    assert y.shape == expected.shape and y.dtype == expected.dtype
    assert all(n >= 2 for n in y.numblocks[2:])  # really spatially chunked
    np.testing.assert_array_equal(client.compute(y).result(), expected)


def test_maxpool_over_chunked_volume_on_cluster_is_bitwise(client, rng):
    x = rng.standard_normal((2, 3, 22, 19, 20)).astype(np.float32)
    x[0, 1, 5, 5, 5] = np.nan
    options = dict(stride=(2, 3, 1), padding=(1, 0, 1), dilation=(1, 2, 1), ceil_mode=True)
    expected, _ = ck.maxpool_forward(x, (3, 2, 2), **options)
    y = ckd.maxpool_forward(da.from_array(x, chunks=(1, 3, 8, 7, 9)), (3, 2, 2), **options)
    np.testing.assert_array_equal(client.compute(y).result(), expected)


def conv_model(dtype):
    return ck.Sequential(
        ck.Conv(1, 8, (3, 3), padding=1, activation="relu", dtype=dtype, rng=0),
        ck.MaxPool(2),
        ck.Conv(8, 6, (3, 3), stride=2, padding=((1, 0), (0, 1)), dtype=dtype, rng=1),
        ck.Tanh(),
        ck.Flatten(),
    )


def test_predict_on_cluster_equals_in_memory(client, rng):
    x = rng.random((70, 1, 12, 12), dtype=np.float32)
    # Conv, MaxPool, activations and Dense: the same bits as one call on the whole batch
    # (every layer computes an image's outputs by the same sums whatever the batch).
    model = conv_model(np.float32)
    y = ckd.predict(model, da.from_array(x, chunks=(16, 1, 12, 12)))
    assert y.chunks == ((16, 16, 16, 16, 6), (54,))
    np.testing.assert_array_equal(client.compute(y).result(), model.eval()(x))
    model = ck.Sequential(*conv_model(np.float32).layers, ck.Dense(54, 10, rng=2))
    y = client.compute(ckd.predict(model, da.from_array(x, chunks=16))).result()
    np.testing.assert_array_equal(y, model.eval()(x))


def test_predict_ships_the_model_in_one_task():
    # Every other task is small: the model is one graph key, sent once to each worker.
    model = ck.Sequential(ck.Flatten(), ck.Dense(4096, 64, rng=0))
    size = model.params["1.weight"].nbytes
    y = ckd.predict(model, da.zeros((64, 1, 64, 64), dtype=np.float32, chunks=8))
    sizes = [len(pickle.dumps(task)) for task in dict(y.__dask_graph__()).values()]
    assert sum(s >= size for s in sizes) == 1
    assert sorted(sizes)[-2] < size // 100


def test_predict_uses_an_eval_copy_of_the_model(rng):
    model = conv_model(np.float64)
    x = rng.random((5, 1, 12, 12))
    y = ckd.predict(model, da.from_array(x, chunks=2))
    assert model.training
    expected = model.eval()(x)
    for array in model.params.values():
        array += 1.0  # a change after the graph is built does not reach it
    np.testing.assert_array_equal(y.compute(scheduler="sync"), expected)


def random_geometry(rng):
    """A random valid 1-, 2- or 3-D conv and pooling call on random chunks."""
    d = int(rng.integers(1, 4))
    size = (int(rng.integers(1, 3)), int(rng.integers(1, 4)))
    size += tuple(int(rng.integers(6, 25 if d < 3 else 12)) for _ in range(d))
    chunks = tuple(int(rng.integers(1, n + 1)) for n in size)
    ints = lambda low, high: tuple(int(v) for v in rng.integers(low, high, d))  # noqa: E731
    conv = dict(stride=ints(1, 4), dilation=ints(1, 3),
                padding=tuple(zip(ints(0, 4), ints(0, 4))))
    kernel = ints(1, 4)
    pool = dict(stride=conv["stride"], dilation=ints(1, 3), ceil_mode=bool(rng.integers(2)),
                padding=tuple(int(rng.integers(0, k // 2 + 1)) for k in kernel))
    return size, chunks, ints(1, 5), conv, kernel, pool


@pytest.mark.parametrize("seed", range(40))
def test_random_geometries_and_chunks_are_bitwise(seed):
    rng = np.random.default_rng(seed)
    size, chunks, kernel, conv, pool_kernel, pool = random_geometry(rng)
    x = rng.standard_normal(size)
    xd = da.from_array(x, chunks=chunks)
    w = rng.standard_normal((3, size[1]) + kernel)
    try:
        expected = ck.conv_forward(x, w, **conv)
    except ValueError:  # kernel larger than the padded input
        with pytest.raises(ValueError):
            ckd.conv_forward(xd, w, **conv)
    else:
        got = ckd.conv_forward(xd, w, **conv).compute(scheduler="sync")
        np.testing.assert_array_equal(got, expected)
    try:
        expected, _ = ck.maxpool_forward(x, pool_kernel, **pool)
    except ValueError:
        with pytest.raises(ValueError):
            ckd.maxpool_forward(xd, pool_kernel, **pool)
    else:
        got = ckd.maxpool_forward(xd, pool_kernel, **pool).compute(scheduler="sync")
        np.testing.assert_array_equal(got, expected)


def test_unbatched_inputs_and_string_padding(rng):
    x = rng.standard_normal((3, 20, 21)).astype(np.float32)
    xd = da.from_array(x, chunks=(1, 7, 5))
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    for padding in ("same", "full", "valid"):
        got = ckd.conv_forward(xd, w, padding=padding, stride=2).compute(scheduler="sync")
        np.testing.assert_array_equal(got, ck.conv_forward(x, w, padding=padding, stride=2))
    got = ckd.maxpool_forward(xd, (2, 3), padding=(1, 1)).compute(scheduler="sync")
    np.testing.assert_array_equal(got, ck.maxpool_forward(x, (2, 3), padding=(1, 1))[0])


def test_bad_arguments_are_refused_when_the_graph_is_built():
    x = da.zeros((2, 3, 10, 10), dtype=np.float32, chunks=5)
    w = np.zeros((4, 3, 3, 3), np.float32)
    with pytest.raises(TypeError, match="x must be a dask.array.Array"):
        ckd.conv_forward(np.zeros((2, 3, 10, 10), np.float32), w)
    with pytest.raises(TypeError, match="x must have dtype float32 or float64"):
        ckd.conv_forward(x.astype(np.int32), w)
    with pytest.raises(TypeError, match="has dtype float64"):
        ckd.conv_forward(x, w.astype(np.float64))
    with pytest.raises(ValueError, match="channels"):
        ckd.conv_forward(x, np.zeros((4, 2, 3, 3), np.float32))
    with pytest.raises(ValueError, match="bias must have shape"):
        ckd.conv_forward(x, w, np.zeros(5, np.float32))
    with pytest.raises(ValueError, match="larger than the padded input"):
        ckd.conv_forward(x, np.zeros((4, 3, 11, 3), np.float32))
    with pytest.raises(ValueError, match="over half the kernel"):
        ckd.maxpool_forward(x, 2, padding=2)
    with pytest.raises(ValueError, match="unknown chunk sizes"):
        ckd.conv_forward(x[x[:, 0, 0, 0] > 0], w)
    with pytest.raises(TypeError, match="convkern Layer"):
        ckd.predict(lambda a: a, x)
    with pytest.raises(ValueError, match="channels"):
        ckd.predict(conv_model(np.float32), x)


def test_import_convkern_imports_neither_dask_nor_mpi4py():
    code = "import sys, convkern; print(sorted({'dask', 'distributed', 'mpi4py'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_stub_matches_the_implementation():
    from test_config import test_stubs_match_the_implementation

    test_stubs_match_the_implementation("dask")
