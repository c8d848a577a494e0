"""The kernels work on three spatial axes: 1-D and 2-D calls are lifted with unit axes."""


def lift_shape(shape, d):
    """``(N, C, *S)`` with ``d`` spatial axes as ``(N, C, 1, ..., *S)`` with three."""
    return tuple(shape[:2]) + (1,) * (3 - d) + tuple(shape[2:])


def lift_params(values, d, fill):
    """A d-tuple of per-axis parameters as a 3-tuple, ``fill`` on the added axes."""
    return (fill,) * (3 - d) + tuple(values)
