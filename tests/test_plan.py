"""ConvPlan: the same bits as the functions, per-call checks, forcing, repr, the cache."""

import numpy as np
import pytest

import convkern as ck
from convkern import conv as conv_module


def _arrays(rng, x_shape, w_shape, dtype=np.float32):
    return (rng.standard_normal(x_shape).astype(dtype),
            rng.standard_normal(w_shape).astype(dtype))


@pytest.mark.parametrize("bias", [None, "tied", "untied"])
@pytest.mark.parametrize("unbatched", [False, True])
def test_plan_methods_give_the_functions_bits(bias, unbatched, rng):
    x_shape, w_shape = (3, 6, 9, 8), (10, 3, 3, 3)
    kw = dict(stride=(1, 2), padding=((1, 0), (2, 1)), dilation=1, groups=2)
    if unbatched:
        x_shape = x_shape[1:]
    plan = ck.conv_plan(x_shape, w_shape, bias=bias, **kw)
    x, w = _arrays(rng, x_shape, w_shape)
    b = None
    if bias == "tied":
        b = rng.standard_normal(10).astype(np.float32)
    elif bias == "untied":
        b = rng.standard_normal(plan.y_shape[-3:]).astype(np.float32)
    y = plan.forward(x, w, b)
    assert y.tobytes() == ck.conv_forward(x, w, b, **kw).tobytes()
    gy = rng.standard_normal(y.shape).astype(np.float32)
    assert plan.backward_input(gy, w).tobytes() == ck.conv_backward_input(gy, w, x_shape,
                                                                            **kw).tobytes()
    assert plan.backward_weight(x, gy).tobytes() == ck.conv_backward_weight(x, gy, w_shape,
                                                                             **kw).tobytes()
    if bias is not None:
        gyb = gy if not unbatched else gy[None]
        assert plan.backward_bias(gy).tobytes() == ck.conv_backward_bias(
            gyb, untied=bias == "untied").tobytes()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("bias", [None, "tied", "untied"])
def test_fused_relu_equals_relu_of_the_output(dtype, bias, rng):
    x_shape, w_shape = (2, 4, 7, 7), (6, 4, 3, 3)
    plan = ck.conv_plan(x_shape, w_shape, dtype=dtype, padding=1, bias=bias)
    x, w = _arrays(rng, x_shape, w_shape, dtype)
    x[0, 0, 0, 0] = np.nan  # NaN stays NaN through ReLU, as in PyTorch
    b = {None: None, "tied": rng.standard_normal(6),
         "untied": rng.standard_normal(plan.y_shape[1:])}[bias]
    b = None if b is None else b.astype(dtype)
    for path in plan.valid_paths("forward"):
        forced = plan.force(forward=path)
        y = forced.forward(x, w, b)
        fused = forced.forward(x, w, b, activation="relu")
        expected = np.where(y > 0, y, np.where(np.isnan(y), y, 0)).astype(dtype)
        assert np.isnan(fused).any()
        assert fused.tobytes() == expected.tobytes(), path


def test_plan_describes_itself():
    plan = ck.conv_plan((8, 16, 12, 12), (32, 16, 3, 3), padding=1)
    assert plan.y_shape == (8, 32, 12, 12)
    assert set(plan.paths) == {"forward", "backward_input", "backward_weight", "backward_bias"}
    assert all(isinstance(v, int) and v > 0 for k, v in plan.scratch_bytes.items()
               if k != "backward_bias")
    assert plan.isa == ck._conv.kernel_info()["isa"]
    text = repr(plan)
    for word in ("ConvPlan", "x_shape=(8, 16, 12, 12)", plan.paths["forward"], plan.isa,
                 "scratch", "threads="):
        assert word in text


def test_force_accepts_valid_paths_only():
    plan = ck.conv_plan((2, 8, 9, 9), (8, 8, 3, 3), stride=2, padding=1)
    assert "flipped" not in plan.valid_paths("backward_input")  # strided
    with pytest.raises(ValueError, match="flipped.*not valid"):
        plan.force(backward_input="flipped")
    with pytest.raises(ValueError, match="pass must be one of"):
        plan.force(sideways="slab")
    forced = plan.force(forward="im2col", backward_weight="im2col_dot")
    assert forced.paths["forward"] == "im2col" and plan.paths["forward"] != "im2col"
    assert forced.paths["backward_weight"] == "im2col_dot"


@pytest.mark.parametrize("call, error, match", [
    ("plan.forward(x.astype(np.float64), w)", TypeError, "x has dtype float64"),
    ("plan.forward(x[:1], w)", ValueError, "x must have shape"),
    ("plan.forward(x, w, np.ones(4, np.float32))", ValueError, "bias must have shape"),
    ("plan.forward(x, w, activation='gelu')", ValueError, "activation"),
    ("plan.forward(x.tolist(), w)", TypeError, "ndarray"),
    ("plan.backward_input(x, w)", ValueError, "grad_y must have shape"),
    ("nobias.backward_bias(y)", ValueError, "no bias"),
    ("nobias.backward_weight_bias(x, y)", ValueError, "no bias"),
    ("plan.backward_weight_bias(x, y, bias_out=np.ones(5, np.float32))", ValueError,
     "out must have shape"),
    ("nobias.forward(x, w, np.ones(6, np.float32))", ValueError, "no bias"),
    ("ck.conv_plan((2, 3, 5, 5), (6, 3, 3, 3), bias='shared')", ValueError, "bias must be"),
    ("ck.conv_plan((2, 3, 5, 5), (6, 3, 3, 3), dtype=np.int32)", TypeError, "dtype"),
    ("ck.conv_plan((2, 3, 5, 5), (6, 3, 3, 3), stride=1.5)", ValueError, "stride"),
    ("ck.conv_plan((2, 4, 5, 5), (6, 3, 3, 3))", ValueError, "channels"),
    ("ck.conv_plan((2, 3, 2, 2), (6, 3, 3, 3))", ValueError, "larger than the padded"),
    ("ck.conv_plan(None, (6, 3, 3, 3))", TypeError, "tuples"),
])
def test_plan_errors(call, error, match):
    plan = ck.conv_plan((2, 3, 5, 5), (6, 3, 3, 3))
    nobias = ck.conv_plan((2, 3, 5, 5), (6, 3, 3, 3), bias=None)
    x = np.ones((2, 3, 5, 5), np.float32)
    w = np.ones((6, 3, 3, 3), np.float32)
    y = np.ones((2, 6, 3, 3), np.float32)
    with pytest.raises(error, match=match):
        eval(call, {"np": np, "ck": ck}, dict(plan=plan, nobias=nobias, x=x, w=w, y=y))


def test_functions_reuse_cached_plans_but_validate_new_parameter_kinds():
    x = np.ones((1, 2, 6, 6), np.float32)
    w = np.ones((3, 2, 3, 3), np.float32)
    conv_module._plans.clear()
    ck.conv_forward(x, w, stride=1)
    ck.conv_forward(x, w, stride=1)
    assert len(conv_module._plans) == 1
    # equal as Python values, but a bool is not a stride: it must be validated, not hit
    with pytest.raises(ValueError, match="stride"):
        ck.conv_forward(x, w, stride=True)
    with pytest.raises(ValueError, match="stride"):
        ck.conv_forward(x, w, stride=1.0)
    for i in range(conv_module._plans.size + 5):
        ck.conv_forward(np.ones((1, 2, 6 + i % 40, 6), np.float32), w, padding=i // 40)
    assert len(conv_module._plans) <= conv_module._plans.size


def test_fused_bias_of_an_untied_plan_and_of_an_empty_batch(rng):
    plan = ck.conv_plan((2, 3, 6, 6), (4, 3, 3, 3), bias="untied")
    x, w = _arrays(rng, (2, 3, 6, 6), (4, 3, 3, 3))
    gy = rng.standard_normal(plan.y_shape).astype(np.float32)
    gw, gb = plan.backward_weight_bias(x, gy)
    assert gb.tobytes() == plan.backward_bias(gy).tobytes()
    assert gw.tobytes() == plan.backward_weight(x, gy).tobytes()
    empty = ck.conv_plan((0, 3, 6, 6), (4, 3, 3, 3))
    gw, gb = empty.backward_weight_bias(np.ones((0, 3, 6, 6), np.float32),
                                        np.ones((0, 4, 4, 4), np.float32))
    assert not gw.any() and not gb.any() and gb.shape == (4,)
