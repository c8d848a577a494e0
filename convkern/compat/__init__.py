"""Drop-in replacements for the APIs other NumPy CNN code already calls.

- :mod:`convkern.compat.cs231n`: the functions of Stanford cs231n's
  ``assignment2/cs231n/fast_layers.py`` and the convolution helpers of its
  ``layer_utils.py``.

Nothing is imported here: ``import convkern`` stays as light as before.
"""
