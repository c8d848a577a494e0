"""PoolPlan: the functions' bits, per-call checks, the cache, and the MaxPool layer's plans."""

import numpy as np
import pytest
import reference as ref

import convkern as ck
from convkern import pool as pool_module

GEOMETRIES = [
    # x_shape, kernel_size, options
    ((2, 3, 11), 3, dict(stride=2, padding=1)),
    ((2, 3, 9, 8), (3, 2), dict(stride=(2, 1), padding=((0, 2), (1, 0)), dilation=(1, 2))),
    ((3, 7, 6), (2, 3), dict(stride=None, padding="same", ceil_mode=True)),  # unbatched 2-D
    ((1, 2, 5, 6, 7), 2, dict(stride=1, padding=0, dilation=2)),
    ((2, 4, 8, 8), 2, dict()),
]


@pytest.mark.parametrize("x_shape, kernel, options", GEOMETRIES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_pool_plan_gives_the_functions_bits(x_shape, kernel, options, dtype, rng):
    plan = ck.pool_plan(x_shape, kernel, dtype=dtype, **options)
    x = rng.standard_normal(x_shape).astype(dtype)
    y, idx = plan.forward(x)
    fy, fidx = ck.maxpool_forward(x, kernel, **options)
    assert y.shape == plan.y_shape and y.dtype == dtype
    assert y.tobytes() == fy.tobytes() and idx.tobytes() == fidx.tobytes()
    ry, ridx = ref.maxpool_forward(x.astype(np.float64), kernel, **options)
    assert np.array_equal(y, ry.astype(dtype)) and np.array_equal(idx, ridx)
    gy = rng.standard_normal(y.shape).astype(dtype)
    spatial = len(kernel) if isinstance(kernel, tuple) else len(x_shape) - 2
    gx = plan.backward(gy, idx)
    assert gx.tobytes() == ck.maxpool_backward(gy, idx, x_shape,
                                               spatial_dims=spatial).tobytes()


def test_pool_plan_fills_out_and_checks_arrays(rng):
    plan = ck.pool_plan((2, 3, 8, 8), 2)
    x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    y, idx = np.empty(plan.y_shape, np.float32), np.empty(plan.y_shape, np.int64)
    got = plan.forward(x, out=(y, idx))
    assert got[0] is y and got[1] is idx
    gx = np.empty(plan.x_shape, np.float32)
    assert plan.backward(np.ones_like(y), idx, out=gx) is gx
    with pytest.raises(TypeError, match="dtype float64 but the plan is for float32"):
        plan.forward(x.astype(np.float64))
    with pytest.raises(ValueError, match=r"x must have shape \(2, 3, 8, 8\)"):
        plan.forward(x[:1])
    with pytest.raises(TypeError, match="out must be a"):
        plan.forward(x, out=y)
    with pytest.raises(ValueError, match="indices must have shape"):
        plan.backward(np.ones_like(y), idx[:1])
    with pytest.raises(TypeError, match="indices"):
        plan.backward(np.ones_like(y), idx.astype(np.float32))
    bad = idx.copy()
    bad[0, 0, 0, 0] = 64
    with pytest.raises(ValueError, match="outside the input plane"):
        plan.backward(np.ones_like(y), bad)


@pytest.mark.parametrize("call, error, match", [
    (lambda: ck.pool_plan([2, 3, 8], 2, dtype=np.int32), TypeError, "dtype"),
    (lambda: ck.pool_plan((2, 3, 8), 2, padding=2), ValueError, "over half the kernel"),
    (lambda: ck.pool_plan((3, 8), 2), ValueError, "3, 4 or 5 dimensions"),
    (lambda: ck.pool_plan((2, 3, 8, 8), (2, 2), stride=0), ValueError, "stride"),
    (lambda: ck.pool_plan((2, 3, 8, 8), 2, ceil_mode=2), ValueError, "ceil_mode"),
    (lambda: ck.pool_plan(8, 2), TypeError, "x_shape"),
])
def test_pool_plan_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_pool_plan_describes_itself():
    plan = ck.pool_plan((2, 3, 9, 9), 3, stride=2, padding=1)
    text = repr(plan)
    assert "PoolPlan(x_shape=(2, 3, 9, 9)" in text and "y_shape=(2, 3, 5, 5)" in text
    assert plan.padding == ((1, 1), (1, 1)) and plan.stride == (2, 2)
    assert 1 <= plan.num_threads <= ck.get_num_threads()


def test_maxpool_forward_reuses_cached_plans_but_validates_new_parameter_kinds(rng):
    x = rng.standard_normal((1, 2, 8, 8)).astype(np.float32)
    pool_module._plans.clear()
    ck.maxpool_forward(x, 2)
    ck.maxpool_forward(x, 2)
    assert len(pool_module._plans) == 1
    with pytest.raises(ValueError, match="kernel_size"):
        ck.maxpool_forward(x, 2.0)
    with pytest.raises(ValueError, match="kernel_size"):
        ck.maxpool_forward(x, True)
    for i in range(pool_module._plans.size + 3):
        ck.maxpool_forward(np.ones((1, 1, 4 + i, 4), np.float32), 2)
    assert len(pool_module._plans) <= pool_module._plans.size


def test_maxpool_layer_holds_one_plan_per_input_shape(rng):
    layer = ck.MaxPool(2, padding=((0, 1), (1, 0)))
    for n in (3, 1, 3):
        x = rng.standard_normal((n, 2, 7, 7)).astype(np.float32)
        y = layer.forward(x)
        fy, fidx = ck.maxpool_forward(x, 2, padding=((0, 1), (1, 0)))
        assert y.tobytes() == fy.tobytes()
        gx = layer.backward(np.ones_like(y))
        assert gx.tobytes() == ck.maxpool_backward(np.ones_like(y), fidx, x.shape).tobytes()
    plans = {key: e.plan for key, e in layer._shapes._entries.items()}
    assert len(plans) == 2 and all(isinstance(p, ck.PoolPlan) for p in plans.values())
    with pytest.raises(TypeError, match="float32 or float64"):
        layer.forward(np.ones((1, 2, 7, 7), np.int32))
