"""Save and load models as ``.npz``: the architecture (JSON) and every parameter.

The file holds one entry ``__convkern__`` (a JSON string: format tag and the
architecture, i.e. each layer's type and constructor arguments) and one entry
``param:<name>`` per parameter, named as in ``model.params``. Loading into an existing
model refuses a file whose architecture, parameter names, shapes or dtypes differ.

This module does not import the layers: every subclass of ``convkern.Layer`` registers
itself here (``register_layer``) when it is defined, so that ``load_model`` can rebuild
it by name. A layer with a ``layers`` list (``Sequential``) is stored as its children.
"""

import json

import numpy as np

__all__ = ["save_model", "load_model"]

FORMAT = "convkern-model-1"
HEADER = "__convkern__"
PREFIX = "param:"
# Layer classes by name, filled by register_layer; "Layer" is the base class.
LAYER_TYPES = {}


def register_layer(cls):
    """Make ``cls`` loadable by its name (the first class of a name keeps it)."""
    LAYER_TYPES.setdefault(cls.__name__, cls)
    return cls


def _is_layer(model):
    return "Layer" in LAYER_TYPES and isinstance(model, LAYER_TYPES["Layer"])


def _describe(layer):
    """Return the JSON-compatible architecture of a layer (recursing into containers)."""
    if hasattr(layer, "layers"):
        return {"type": type(layer).__name__, "layers": [_describe(sub) for sub in layer.layers]}
    # The JSON round trip turns tuples into lists, as they come back from a file.
    return {"type": type(layer).__name__, "config": json.loads(json.dumps(layer.config()))}


def _build(spec):
    """Construct a layer from its architecture description."""
    kind = spec.get("type")
    if kind not in LAYER_TYPES or kind == "Layer":
        raise ValueError(f"unknown layer type {kind!r} in the model file")
    if "layers" in spec:
        return LAYER_TYPES[kind](*(_build(sub) for sub in spec["layers"]))
    return LAYER_TYPES[kind](**spec["config"])


def _match(layer, spec, where):
    """Raise ValueError unless ``layer`` has the architecture ``spec``."""
    kind = type(layer).__name__
    if spec.get("type") != kind:
        raise ValueError(f"{where}: the file has a {spec.get('type')} layer, the model a {kind}")
    if hasattr(layer, "layers"):
        if len(spec["layers"]) != len(layer.layers):
            raise ValueError(
                f"{where}: the file has {len(spec['layers'])} layers, "
                f"the model {len(layer.layers)}"
            )
        for i, (sub, sub_spec) in enumerate(zip(layer.layers, spec["layers"], strict=True)):
            _match(sub, sub_spec, f"{where}[{i}]")
        return
    theirs = spec["config"]
    # An untied Conv bias not yet shaped by a first call takes its shape from the file.
    unshaped = getattr(layer, "bias", None) == "untied" and layer.input_shape is None
    if unshaped and theirs.get("input_shape") is not None:
        layer.build(tuple(theirs["input_shape"]))
    ours = _describe(layer)["config"]
    for key in sorted(set(ours) | set(theirs)):
        if ours.get(key) != theirs.get(key):
            raise ValueError(
                f"{where} ({kind}): {key} is {theirs.get(key)!r} in the file "
                f"but {ours.get(key)!r} in the model"
            )


def save_model(model, path):
    """Save a model's architecture and parameters to an ``.npz`` file.

    Parameters
    ----------
    model : Layer
        Any layer or Sequential.
    path : str or os.PathLike
        Destination; NumPy appends ``.npz`` if it is missing.
    """
    if not _is_layer(model):
        raise TypeError(f"model must be a convkern Layer, got {type(model).__name__}")
    header = json.dumps({"format": FORMAT, "architecture": _describe(model)})
    arrays = {PREFIX + name: value for name, value in model.params.items()}
    np.savez(path, **{HEADER: np.array(header)}, **arrays)


def load_model(path, model=None):
    """Load a model saved by ``save_model`` (or ``model.save``).

    Parameters
    ----------
    path : str or os.PathLike
        An ``.npz`` file written by ``save_model``.
    model : Layer, optional
        A model to load the parameters into, in place. Its architecture must match the
        file's. If None, the model is rebuilt from the file.

    Returns
    -------
    Layer
        ``model``, or the rebuilt model.

    Raises
    ------
    ValueError
        If the file is not a convkern model file, or its architecture, parameter names,
        shapes or dtypes differ from ``model``'s.
    """
    if model is not None and not _is_layer(model):
        raise TypeError(f"model must be a convkern Layer or None, got {type(model).__name__}")
    with np.load(path, allow_pickle=False) as data:
        if HEADER not in data.files:
            raise ValueError(f"{path} is not a convkern model file (no {HEADER} entry)")
        header = json.loads(str(data[HEADER]))
        if header.get("format") != FORMAT:
            raise ValueError(f"{path} has format {header.get('format')!r}, expected {FORMAT!r}")
        stored = {key[len(PREFIX):]: data[key] for key in data.files if key.startswith(PREFIX)}
    if model is None:
        model = _build(header["architecture"])
    else:
        _match(model, header["architecture"], "model")
    params = model.params
    if set(params) != set(stored):
        raise ValueError(
            f"parameters differ: the file has {sorted(stored)}, the model {sorted(params)}"
        )
    for name, value in stored.items():
        if value.shape != params[name].shape or value.dtype != params[name].dtype:
            raise ValueError(
                f"parameter {name}: the file has {value.dtype}{value.shape}, "
                f"the model {params[name].dtype}{params[name].shape}"
            )
    for name, value in stored.items():
        np.copyto(params[name], value)
    return model
