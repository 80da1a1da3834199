"""Array-library helpers: the pair-level checks are written once for numpy and torch (CPU or CUDA).

Inputs may be Python numbers, lists, numpy arrays or torch tensors; the result has the array type of the first
array argument (numpy float64 when only Python numbers are given).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from array_api_compat import array_namespace, is_torch_array
from scipy.special import expit

Array = Any  # numpy.ndarray | torch.Tensor


def as_arrays(*values: Any) -> tuple[Any, list[Array]]:
    """Return (namespace, arrays) with every value converted to the namespace, dtype and device of the first array.

    Python numbers and lists become float64 numpy arrays when no array is given.
    """
    ref = next((v for v in values if isinstance(v, np.ndarray) or is_torch_array(v)), None)
    if ref is None:
        arrays = [np.asarray(v, dtype=np.float64) for v in values]
        return array_namespace(*arrays), arrays
    xp = array_namespace(ref)
    if is_torch_array(ref):
        import torch

        dtype = ref.dtype if ref.dtype.is_floating_point else torch.float64
        out = [
            v.to(dtype=dtype) if is_torch_array(v) else torch.as_tensor(v, dtype=dtype, device=ref.device)
            for v in values
        ]
        return xp, out
    dtype = ref.dtype if np.issubdtype(ref.dtype, np.floating) else np.float64
    return xp, [np.asarray(v, dtype=dtype) for v in values]


def softplus(xp: Any, x: Array) -> Array:
    """log(1 + e^x) without overflow or cancellation: max(x, 0) + log1p(e^{−|x|})."""
    return xp.maximum(x, xp.zeros_like(x)) + xp.log1p(xp.exp(-xp.abs(x)))


def sigmoid(xp: Any, x: Array) -> Array:
    """σ(x), exact in both tails (scipy's expit for numpy, torch.sigmoid for torch)."""
    if is_torch_array(x):
        import torch

        return torch.sigmoid(x)
    return expit(x)


def to_numpy(x: Any) -> np.ndarray:
    """A numpy view/copy of any supported array (torch tensors are detached and moved to the CPU)."""
    return np.asarray(x.detach().cpu()) if is_torch_array(x) else np.asarray(x)


def require_positive_beta(beta: Any) -> None:
    """Raise ValueError unless every β is finite and > 0."""
    b = np.asarray(to_numpy(beta), dtype=np.float64)
    if not np.all(np.isfinite(b)) or np.any(b <= 0):
        raise ValueError(f"beta must be finite and > 0 (KL-regularised RLHF needs β > 0); got {beta!r}")


def require_finite(name: str, x: Array) -> None:
    """Raise ValueError naming the field and first offending position when x has NaN or ±inf.

    The check runs in x's own array library (no copy off a GPU unless something is wrong).
    """
    if is_torch_array(x):
        import torch

        ok = bool(torch.isfinite(x).all())
    else:
        ok = bool(np.isfinite(x).all())
    if ok:
        return
    a = np.asarray(to_numpy(x), dtype=np.float64)
    bad = ~np.isfinite(a)
    pos = tuple(int(i) for i in np.argwhere(bad)[0]) if a.ndim else ()
    raise ValueError(f"{name} must be finite; found {float(a[bad].flat[0])!r} at position {pos}")
