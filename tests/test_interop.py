"""PyTorch interop: from_torch, to_torch and state dicts with PyTorch's keys.

Every supported module and parameter form is converted both ways: the converted model's
forward and every gradient equal PyTorch's (through compare_with_torch, tolerances
TORCH_TOLERANCE = conftest.TOLERANCE), the state-dict keys and values equal the torch
module's, and to_torch gives back a module with the same keys and outputs.
"""

from collections import OrderedDict

import numpy as np
import pytest
from conftest import DTYPES, assert_close

import convkern
from convkern import Conv, Dense, Flatten, Layer, MaxPool, ReLU, Sequential, Tanh
from convkern.testing import compare_with_torch

torch = pytest.importorskip("torch")
nn = torch.nn
pytestmark = pytest.mark.torch


def seq(*modules):
    return nn.Sequential(*modules)


# (id, torch model factory, input shape). Each factory builds in float32; tests cast.
CASES = [
    ("conv1d", lambda: seq(nn.Conv1d(3, 4, 3)), (2, 3, 11)),
    ("conv1d-stride-pad-dil", lambda: seq(nn.Conv1d(3, 4, 3, stride=2, padding=2, dilation=2)),
     (2, 3, 13)),
    ("conv2d-tuples", lambda: seq(nn.Conv2d(3, 4, (3, 2), stride=(2, 1), padding=(1, 0),
                                            dilation=(1, 2))), (2, 3, 9, 8)),
    ("conv2d-same", lambda: seq(nn.Conv2d(3, 4, (4, 3), padding="same", dilation=(2, 1))),
     (2, 3, 9, 8)),
    ("conv2d-valid", lambda: seq(nn.Conv2d(3, 4, 3, padding="valid")), (2, 3, 7, 6)),
    ("conv2d-groups-nobias", lambda: seq(nn.Conv2d(4, 6, 3, groups=2, bias=False)),
     (2, 4, 6, 6)),
    ("conv2d-depthwise", lambda: seq(nn.Conv2d(4, 8, 3, groups=4, padding=1)), (2, 4, 5, 5)),
    ("conv3d", lambda: seq(nn.Conv3d(2, 3, (2, 3, 2), stride=(1, 2, 1), padding=(1, 1, 0),
                                     dilation=(2, 1, 1))), (2, 2, 5, 6, 4)),
    ("maxpool1d", lambda: seq(nn.MaxPool1d(3, stride=2, padding=1, dilation=2, ceil_mode=True)),
     (2, 3, 12)),
    ("maxpool2d", lambda: seq(nn.MaxPool2d(2)), (2, 3, 6, 7)),
    ("maxpool2d-tuples", lambda: seq(nn.MaxPool2d((3, 2), stride=(2, 1), padding=(1, 0),
                                                  ceil_mode=True)), (2, 3, 8, 7)),
    ("maxpool3d", lambda: seq(nn.MaxPool3d(2, stride=1, padding=1)), (2, 2, 4, 5, 3)),
    ("linear", lambda: seq(nn.Linear(5, 3)), (4, 5)),
    ("linear-nobias-tanh", lambda: seq(nn.Linear(5, 3, bias=False), nn.Tanh()), (4, 5)),
    ("conv-relu-pool-flatten-linear-sigmoid",
     lambda: seq(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                 nn.Linear(4 * 3 * 3, 5), nn.Sigmoid()), (2, 3, 6, 6)),
    ("standalone-activations",
     lambda: seq(nn.MaxPool2d(2), nn.ReLU(), nn.Conv2d(3, 4, 1), nn.Tanh(), nn.Sigmoid(),
                 nn.Flatten(), nn.Tanh()), (2, 3, 4, 4)),
    ("nested",
     lambda: seq(nn.Conv2d(3, 4, 3), seq(nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1), nn.Tanh(),
                                         seq(nn.MaxPool2d(2))),
                 nn.Sigmoid(), seq(nn.Flatten(), nn.Linear(16, 2), nn.ReLU())), (2, 3, 6, 6)),
    ("named", lambda: nn.Sequential(OrderedDict(
        conv1=nn.Conv2d(3, 4, 3), act=nn.ReLU(), pool=nn.MaxPool2d(2),
        block=nn.Sequential(OrderedDict(flat=nn.Flatten(), fc=nn.Linear(4, 2))))),
     (2, 3, 4, 4)),
]
FACTORIES = {name: factory for name, factory, _ in CASES}


def torch_model(factory, dtype):
    torch.manual_seed(0)
    model = factory().to(getattr(torch, np.dtype(dtype).name))
    with torch.no_grad():  # non-zero biases, so a lost bias shows
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.uniform_(-1, 1)
    return model


def torch_forward(model, x):
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_round_trip(case, dtype, rng):
    _, factory, shape = case
    theirs = torch_model(factory, dtype)
    x = rng.standard_normal(shape).astype(dtype)

    ours = convkern.from_torch(theirs)
    assert_close(ours(x), torch_forward(theirs, x), dtype, "from_torch forward")
    state, expected = ours.state_dict(), theirs.state_dict()
    assert list(state) == list(expected)
    for key, value in expected.items():
        assert state[key].dtype == dtype
        np.testing.assert_array_equal(state[key], value.numpy(), err_msg=key)
    compare_with_torch(ours, x)  # forward and every gradient against to_torch(ours)

    back = convkern.to_torch(ours)
    assert list(back.state_dict()) == list(expected)
    assert [type(m) for m in back.modules()] == [type(m) for m in theirs.modules()]
    assert_close(torch_forward(back, x), ours(x), dtype, "to_torch forward")
    assert_close(torch_forward(back, x), torch_forward(theirs, x), dtype, "torch round trip")


def test_activations_fuse_into_the_layer_before():
    model = convkern.from_torch(seq(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Sigmoid(), nn.MaxPool2d(2),
                                    nn.Tanh(), nn.Flatten(), nn.Linear(2, 2), nn.Tanh()))
    kinds = [(type(layer).__name__, getattr(layer, "activation", None)) for layer in model]
    assert kinds == [("Conv", "relu"), ("Sigmoid", None), ("MaxPool", None), ("Tanh", None),
                     ("Flatten", None), ("Dense", "tanh")]
    # An activation after a nested Sequential stays outside it.
    nested = convkern.from_torch(seq(seq(nn.Linear(2, 2)), nn.ReLU()))
    assert nested[0][0].activation is None and type(nested[1]) is ReLU


def test_state_dict_keys_of_a_model_built_directly():
    model = Sequential(
        Conv(1, 2, 3, activation="relu", rng=0),           # torch 0, 1
        MaxPool(2),                                        # 2
        Sequential(Conv(2, 3, 1, bias=None, rng=1), Tanh(), Dense(3, 3, rng=2)),  # 3
        Flatten(),                                         # 4
        Dense(3, 2, activation="sigmoid", bias=False, rng=3),  # 5, 6
        Dense(2, 2, rng=4),                                # 7
    )
    keys = ["0.weight", "0.bias", "3.0.weight", "3.2.weight", "3.2.bias", "5.weight",
            "7.weight", "7.bias"]
    assert list(model.state_dict()) == keys
    assert list(convkern.to_torch(model).state_dict()) == keys
    assert list(Conv(1, 2, 3).state_dict()) == ["weight", "bias"]
    assert MaxPool(2).state_dict() == {}


def test_state_dict_returns_the_arrays_themselves():
    model = Sequential(Dense(3, 2, rng=0))
    model.state_dict()["0.weight"][0, 0] = 7.0
    assert model[0].params["weight"][0, 0] == 7.0


def test_names_fall_back_to_numbering_when_the_layers_change():
    model = convkern.from_torch(nn.Sequential(OrderedDict(fc=nn.Linear(2, 2), act=nn.ReLU())))
    assert list(model.state_dict()) == ["fc.weight", "fc.bias"]
    model.layers.append(Dense(2, 1, rng=0))
    assert list(model.state_dict()) == ["0.weight", "0.bias", "2.weight", "2.bias"]


@pytest.mark.parametrize("dtype", DTYPES)
def test_load_state_dict_from_torch_tensors_and_numpy(dtype, rng):
    theirs = torch_model(FACTORIES["conv-relu-pool-flatten-linear-sigmoid"], dtype)
    ours = Sequential(Conv(3, 4, 3, padding=1, activation="relu", dtype=dtype, rng=0),
                      MaxPool(2), Flatten(), Dense(36, 5, activation="sigmoid", dtype=dtype))
    x = rng.standard_normal((2, 3, 6, 6)).astype(dtype)
    result = ours.load_state_dict(theirs.state_dict())
    assert result == ([], [])
    assert_close(ours(x), torch_forward(theirs, x), dtype)

    fresh = Sequential(Conv(3, 4, 3, padding=1, activation="relu", dtype=dtype, rng=1),
                       MaxPool(2), Flatten(), Dense(36, 5, activation="sigmoid", dtype=dtype))
    fresh.load_state_dict({k: v.astype(np.float64) for k, v in ours.state_dict().items()})
    assert all(p.dtype == dtype for p in fresh.params.values())
    np.testing.assert_array_equal(fresh(x), ours(x))


def make_pair():
    model = Sequential(Conv(1, 2, 3, rng=0), ReLU(), Dense(2, 2, rng=1))
    state = {k: np.ones_like(v) for k, v in model.state_dict().items()}
    return model, state


def test_load_state_dict_errors_name_the_key():
    model, state = make_pair()
    before = {k: v.copy() for k, v in model.state_dict().items()}

    with pytest.raises(ValueError, match="missing key '2.bias'"):
        model.load_state_dict({k: v for k, v in state.items() if k != "2.bias"})
    with pytest.raises(ValueError, match="unexpected key '5.weight'"):
        model.load_state_dict({**state, "5.weight": np.ones(2)})
    bad = dict(state, **{"0.weight": np.ones((2, 1, 3, 2))})
    with pytest.raises(ValueError, match=r"state_dict\['0.weight'\] has shape \(2, 1, 3, 2\)"):
        model.load_state_dict(bad)
    with pytest.raises(ValueError, match="0.weight"):  # shapes are checked when not strict too
        model.load_state_dict(bad, strict=False)
    with pytest.raises(TypeError, match="2.bias"):
        model.load_state_dict(dict(state, **{"2.bias": [1.0, 1.0]}))
    with pytest.raises(TypeError, match="2.bias"):
        model.load_state_dict(dict(state, **{"2.bias": np.array(["a", "b"])}))
    with pytest.raises(TypeError, match="mapping"):
        model.load_state_dict([("0.weight", state["0.weight"])])
    for key, value in model.state_dict().items():  # nothing was copied
        np.testing.assert_array_equal(value, before[key])

    partial = {"0.weight": state["0.weight"], "9.bias": np.ones(3)}
    assert model.load_state_dict(partial, strict=False) == (["0.bias", "2.weight", "2.bias"],
                                                             ["9.bias"])
    np.testing.assert_array_equal(model[0].params["weight"], 1.0)
    np.testing.assert_array_equal(model[0].params["bias"], before["0.bias"])


@pytest.mark.parametrize("module, path", [
    (seq(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.MaxPool2d(2), nn.BatchNorm2d(2)),
     r"model\[3\] \(BatchNorm2d\) is not supported"),
    (seq(nn.Linear(2, 2), seq(nn.ReLU(), nn.Dropout())), r"model\[1\]\[1\] \(Dropout\)"),
    (nn.Sequential(OrderedDict(fc=nn.Linear(2, 2), act=nn.LeakyReLU())),
     r"model\.act \(LeakyReLU\)"),
    (seq(nn.Identity()), r"model\[0\] \(Identity\)"),
    (seq(type("MyConv", (nn.Conv2d,), {})(1, 1, 1)), r"model\[0\] \(MyConv\)"),
])
def test_unsupported_module_type_is_a_type_error(module, path):
    with pytest.raises(TypeError, match=path):
        convkern.from_torch(module)


@pytest.mark.parametrize("module, message", [
    (seq(nn.Linear(2, 2), nn.Conv2d(1, 1, 3, padding=1, padding_mode="reflect")),
     r"model\[1\] \(Conv2d\) is not supported: padding_mode='reflect'"),
    (seq(nn.Flatten(start_dim=2)), r"model\[0\] \(Flatten\) .*start_dim=2"),
    (seq(seq(nn.Linear(2, 2).half())), r"model\[0\]\[0\] \(Linear\) .*float16"),
    (seq(nn.Linear(2, 2), seq()), r"model\[1\] is an empty Sequential"),
])
def test_unsupported_setting_is_a_value_error(module, message):
    with pytest.raises(ValueError, match=message):
        convkern.from_torch(module)


def test_from_torch_takes_a_sequential_only():
    with pytest.raises(TypeError, match="torch.nn.Sequential, got Conv2d"):
        convkern.from_torch(nn.Conv2d(1, 1, 1))


class Custom(Layer):
    def forward(self, x):
        return x


@pytest.mark.parametrize("model, error, message", [
    (Sequential(ReLU(), Sequential(Flatten(), Custom())), TypeError,
     r"model\[1\]\[1\] \(Custom\) has no torch equivalent"),
    (Sequential(Conv(1, 1, 3, bias="untied")), ValueError, r"model\[0\] .*untied"),
    (Sequential(Conv(1, 1, 3, padding=((1, 0), (1, 1)))), ValueError, "asymmetric"),
    (Sequential(Conv(1, 1, 3, stride=2, padding="same")), ValueError, "stride 1 only"),
    (Sequential(MaxPool(2)), ValueError, r"model\[0\] \(MaxPool\).*tuple"),
])
def test_to_torch_errors(model, error, message):
    with pytest.raises(error, match=message):
        convkern.to_torch(model)


def test_to_torch_takes_a_sequential_only():
    with pytest.raises(TypeError, match="convkern Sequential, got Conv"):
        convkern.to_torch(Conv(1, 1, 3))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.filterwarnings("ignore:Using padding=.same. with even kernel")
def test_to_torch_padding_forms_and_int_pool(dtype, rng):
    """'full', symmetric pairs and stride-1 'same' convert; an int MaxPool takes the
    dimension of the Conv before it."""
    model = Sequential(
        Conv(2, 3, (3,), padding="full", dilation=2, dtype=dtype, rng=0),
        MaxPool(2),
        Conv(3, 3, (4,), padding=((1, 1),), dtype=dtype, rng=1),
        Conv(3, 2, (4,), padding="same", dtype=dtype, rng=2),
        Sequential(MaxPool(3, stride=1, padding=1)),
    )
    x = rng.standard_normal((2, 2, 9)).astype(dtype)
    theirs = convkern.to_torch(model)
    assert type(theirs[1]) is nn.MaxPool1d and type(theirs[4][0]) is nn.MaxPool1d
    assert_close(torch_forward(theirs, x), model(x), dtype)
    compare_with_torch(model, x)
