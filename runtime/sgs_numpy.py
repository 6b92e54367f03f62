"""The SGS step in numpy, fp32, in the official op order. Torch-free.

This is the runtime's own implementation (used by the ONNX Runtime pipeline and as the
test implementation of the custom ``SGS`` node) and the host-side twin of the CUDA kernel.
Every choice below mirrors ``shared/docs/sgs-semantics.md``:

* distances reduce over the latent dim (torch-1.9 ``pairwise_distance`` semantics), with the
  1e-6 added to each component of ``mean - Z`` in that operand order;
* scaling is ``Δ * (reciprocal(max Δ) * 2B)`` (torch evaluates ``2B / t`` as reciprocal-then-mul);
* bin centres ``b*w + w/2`` with ``w = M / B`` and ``M`` the max of the *scaled* distances;
* linear weight ``max(0, fp32(1+1e-7) - |δ - c|)``: the fp32 epsilon 2^-23 keeps the farthest
  frame's "ghost" bin alive, so all bin arithmetic stays fp32.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

F32 = np.float32
# fp32(1 + 1e-7) == 1 + 2**-23: the python double rounds to the next fp32 above 1.
LINEAR_ONE = F32(1.0000001)
DIST_EPS = F32(1e-6)


def distances(z: np.ndarray, kind: str = "L2") -> np.ndarray:
    """Per-frame distance Δ [N,T] from embeddings Z [N,L,T]."""
    z = np.asarray(z, dtype=F32)
    if kind == "magnitude":  # the paper's ||Z_t||
        return np.sqrt(_seq_sum(z * z))
    mean = z.mean(axis=2, keepdims=True, dtype=F32)
    if kind in ("L2", "L1"):
        d = (mean - z) + DIST_EPS
        if kind == "L2":
            return np.sqrt(_seq_sum(d * d))
        return _seq_sum(np.abs(d))
    if kind == "Cosine":
        num = _seq_sum(z * mean)
        den = np.sqrt(_seq_sum(z * z)) * np.sqrt(_seq_sum(mean * mean))
        return (F32(1) - num / np.maximum(den, F32(1e-8))).astype(F32)
    if kind == "Mahal":
        diff = (z - mean).astype(np.float64)
        t = z.shape[2]
        cov = np.einsum("nlt,nmt->nlm", diff, diff) / max(t - 1, 1)
        inv = np.linalg.inv(cov)
        return np.einsum("nlt,nlm,nmt->nt", diff, inv, diff).astype(F32)
    raise ValueError(f"unknown distance {kind!r}")


def _seq_sum(x: np.ndarray) -> np.ndarray:
    """Sum over axis 1 sequentially in fp32 (the order torch >= 1.10 and the CUDA kernel use)."""
    acc = x[:, 0].astype(F32)
    for i in range(1, x.shape[1]):
        acc = acc + x[:, i]
    return acc


@dataclass
class SGSResult:
    output: np.ndarray  # [N,C,B',H,W]
    kernel: np.ndarray  # [N,B',T] the aggregation matrix after dropping/compaction
    kernel_raw: np.ndarray  # [N,B,T]
    k_per_sample: np.ndarray  # [N] active bins of each sample (its own B' at batch size 1)
    scaled: np.ndarray  # [N,T] δ
    centers: np.ndarray  # [N,B]
    width: np.ndarray  # [N]

    @property
    def b_prime(self) -> int:
        return int(self.output.shape[2])

    @property
    def mask(self) -> np.ndarray:
        n, c, b, h, w = self.output.shape
        flat = np.transpose(self.output, (0, 2, 1, 3, 4)).reshape(n, b, -1)
        return flat.sum(axis=2) != 0


def guard_zero_max(delta: np.ndarray) -> np.ndarray:
    """All-zero distances (only possible with degenerate embeddings) -> constant distances.

    The official code would compute 2B/0 and produce NaN; constant positive distances give the
    official single-bin result instead, so B' is never 0 and never NaN. Same rule as the torch
    ``guard_zero_max``, the fallback graph and the plugin's ``guard_zero`` field.
    """
    delta = np.asarray(delta, dtype=F32)
    m = delta.max(axis=1, keepdims=True)
    return np.where(m == 0, F32(1), delta).astype(F32)


def bin_weights(delta: np.ndarray, num_bins: int, kernel: str = "linear"):
    """Scaled distances, bin centres/width and the raw kernel matrix [N,B,T] from Δ [N,T]."""
    delta = np.asarray(delta, dtype=F32)
    n, t = delta.shape
    b = t if num_bins == -1 else int(num_bins)
    m1 = delta.max(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        scale = (F32(1) / m1) * F32(2 * b)
        scaled = (delta * scale).astype(F32)
        m = scaled.max(axis=1)  # [N]
        width = (m / F32(b)).astype(F32)
        mu_start = width / F32(2)
        centers = (np.arange(b, dtype=F32)[None, :] * width[:, None] + mu_start[:, None]).astype(F32)
        dist = np.abs(scaled[:, None, :] - centers[:, :, None])  # [N,B,T]
        if kernel.startswith("linear"):
            k = np.maximum(LINEAR_ONE - dist, F32(0))
            k = np.where(np.isnan(dist), np.float32(np.nan), k)  # NaN propagates as in torch.relu
        elif kernel.startswith("delta"):
            k = (dist <= (width / F32(2))[:, None, None]).astype(F32)
        else:
            raise ValueError(f"unknown kernel {kernel!r}")
        if kernel.endswith("_normalized"):
            count = np.maximum((k != 0).sum(axis=2, keepdims=True), 1).astype(F32)
            k = (k / count).astype(F32)
    return scaled, centers, width, k.astype(F32)


def drop_empty(kernel_raw: np.ndarray, per_sample: bool = False):
    """Compact active bins (row sum != 0) to the front in increasing b.

    Returns (kernel [N,B',T] zero-padded to the batch max as the official code does, k [N]).
    """
    n, b, t = kernel_raw.shape
    active = kernel_raw.sum(axis=2) != 0  # NaN != 0 counts as active, as in the official code
    k = active.sum(axis=1).astype(np.int64)
    bp = int(k.max()) if n else 0
    out = np.zeros((n, bp, t), dtype=F32)
    for i in range(n):
        rows = np.nonzero(active[i])[0]
        out[i, : len(rows)] = kernel_raw[i, rows]
    return out, k


def aggregate(x: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Y[n,c,b] = sum_t K[n,b,t] X[n,c,t]: [N,C,T,H,W] x [N,B',T] -> [N,C,B',H,W]."""
    x = np.asarray(x, dtype=F32)
    n, c, t, h, w = x.shape
    xf = np.transpose(x, (0, 2, 1, 3, 4)).reshape(n, t, c * h * w)
    y = np.matmul(kernel, xf)  # [N,B',CHW]
    return np.ascontiguousarray(np.transpose(y.reshape(n, -1, c, h, w), (0, 2, 1, 3, 4)))


def sgs_step(
    x: np.ndarray,
    delta: np.ndarray,
    num_bins: int = -1,
    kernel: str = "linear",
    drop_bins: bool = True,
) -> SGSResult:
    """The SGS step after the embedding net: features X [N,C,T,H,W] and distances Δ [N,T].

    With N > 1 the result is zero-padded to the batch's max active-bin count, exactly as the
    official code; call it per sample (N = 1) for batch-independent results.
    """
    scaled, centers, width, kraw = bin_weights(delta, num_bins, kernel)
    if drop_bins:
        kmat, k = drop_empty(kraw)
        if kmat.shape[1] == 0:
            # Only reachable with the delta kernel on NaN distances: the official code raises here.
            raise ValueError("SGS produced no active bin (non-finite distances?)")
    else:
        kmat = kraw
        k = (kraw.sum(axis=2) != 0).sum(axis=1).astype(np.int64)
    return SGSResult(aggregate(x, kmat), kmat, kraw, k, scaled, centers, width)
