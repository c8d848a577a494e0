"""Seeded weight initialisation (He and Glorot) for the layers of convkern.

Fans follow PyTorch's ``torch.nn.init._calculate_fan_in_and_fan_out``: for a weight of
shape ``(out, in, *K)`` the fan-in is ``in * prod(K)`` and the fan-out ``out * prod(K)``.
"""

import math

import numpy as np

__all__ = ["make_rng", "fans", "he_normal", "glorot_uniform", "init_weight"]

SCHEMES = ("he", "glorot")


def make_rng(rng):
    """Return a NumPy generator from a seed, a generator or None.

    Parameters
    ----------
    rng : None, int or numpy.random.Generator
        ``None`` draws fresh entropy; an int seeds a new generator; a generator is
        returned unchanged (so several layers can share one stream).

    Returns
    -------
    numpy.random.Generator
    """
    valid = rng is None or isinstance(rng, (int, np.integer, np.random.Generator))
    if not valid or isinstance(rng, bool):
        raise TypeError(
            f"rng must be None, an int seed or a numpy.random.Generator, got {type(rng).__name__}"
        )
    return np.random.default_rng(rng)


def fans(shape):
    """Return ``(fan_in, fan_out)`` of a weight of shape ``(out, in, *K)``.

    Parameters
    ----------
    shape : tuple of int
        A Dense weight ``(out, in)`` or a Conv weight ``(F, C // groups, *K)``.

    Returns
    -------
    fan_in, fan_out : int
    """
    receptive = math.prod(shape[2:])
    return shape[1] * receptive, shape[0] * receptive


def he_normal(shape, rng, dtype):
    """He (Kaiming) normal initialisation, ``std = sqrt(2 / fan_in)``, for ReLU layers.

    Parameters
    ----------
    shape : tuple of int
        Weight shape ``(out, in, *K)``.
    rng : numpy.random.Generator
    dtype : numpy dtype
        ``float32`` or ``float64``.

    Returns
    -------
    ndarray of shape `shape`
    """
    fan_in, _ = fans(shape)
    std = math.sqrt(2.0 / fan_in)
    return (rng.standard_normal(shape) * std).astype(dtype)


def glorot_uniform(shape, rng, dtype):
    """Glorot (Xavier) uniform initialisation, ``U(-a, a)``, ``a = sqrt(6 / (fan_in + fan_out))``.

    Parameters
    ----------
    shape : tuple of int
        Weight shape ``(out, in, *K)``.
    rng : numpy.random.Generator
    dtype : numpy dtype
        ``float32`` or ``float64``.

    Returns
    -------
    ndarray of shape `shape`
    """
    fan_in, fan_out = fans(shape)
    bound = math.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-bound, bound, size=shape).astype(dtype)


def init_weight(shape, scheme, rng, dtype):
    """Draw a weight with the named scheme.

    Parameters
    ----------
    shape : tuple of int
        Weight shape ``(out, in, *K)``.
    scheme : {"he", "glorot"}
    rng : numpy.random.Generator
    dtype : numpy dtype

    Returns
    -------
    ndarray of shape `shape`
    """
    if scheme == "he":
        return he_normal(shape, rng, dtype)
    if scheme == "glorot":
        return glorot_uniform(shape, rng, dtype)
    raise ValueError(f"init must be one of {SCHEMES} or None, got {scheme!r}")
