"""SGS in PyTorch: the official TSLayer (embedding net + distance + sampling), exactly.

Module and parameter names match the official ``TSLayer`` (``fc.0``, ``fc.2``, ``bn``) so
official state dicts load strictly. The functional pieces are written with ops that trace to
ONNX (no python loops over data, no ``F.pairwise_distance``: its reduction dim changed in
torch 1.10, see shared/docs/sgs-semantics.md §1.2.1).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from atfr.spec import SGSSpec

LINEAR_ONE = 1.0000001  # becomes fp32 1 + 2**-23 in an fp32 tensor op: the ghost-bin epsilon
DIST_EPS = 1e-6


class Swish(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(x)


def distances(z: torch.Tensor, kind: str = "L2") -> torch.Tensor:
    """Δ [N,T] from embeddings Z [N,L,T], reducing over the latent dim (dim 1)."""
    if kind == "magnitude":
        return torch.sqrt((z * z).sum(dim=1))
    mean = z.mean(dim=2, keepdim=True)
    if kind in ("L2", "L1"):
        d = (mean - z) + DIST_EPS  # operand order matters: see the near-tie golden case
        if kind == "L2":
            return torch.sqrt((d * d).sum(dim=1))
        return d.abs().sum(dim=1)
    if kind == "Cosine":
        num = (z * mean).sum(dim=1)
        den = torch.sqrt((z * z).sum(dim=1)) * torch.sqrt((mean * mean).sum(dim=1))
        return 1.0 - num / den.clamp_min(1e-8)
    if kind == "Mahal":
        diff = z - mean
        t = z.shape[2]
        cov = diff @ diff.transpose(1, 2) / max(t - 1, 1)
        inv = torch.inverse(cov)
        return torch.einsum("nlt,nlm,nmt->nt", diff, inv, diff)
    raise ValueError(f"unknown distance {kind!r}")


def guard_zero_max(delta: torch.Tensor) -> torch.Tensor:
    """Runtime guard: a sample whose distances are all 0 would give 2B/0 = inf and NaN weights.

    Treat it as constant positive distances instead (all frames equal), which the official
    code maps to a single active bin. Only reachable with the 'magnitude' distance or an
    underflowing low-precision front; L1/L2 distances are always >= 1e-6.
    """
    m = delta.amax(dim=1, keepdim=True)
    return torch.where(m == 0, torch.ones_like(delta), delta)


def bin_weights(delta: torch.Tensor, num_bins: int, kernel: str = "linear") -> torch.Tensor:
    """Raw kernel matrix K [N,B,T] from Δ [N,T], in the official fp32 op order."""
    t = delta.shape[1]
    b = t if num_bins == -1 else int(num_bins)
    m1 = delta.amax(dim=1, keepdim=True)
    scaled = delta * (m1.reciprocal() * float(2 * b))  # torch's `2B / m1` is reciprocal-then-mul
    m = scaled.amax(dim=1, keepdim=True)  # [N,1]
    width = m / float(b)
    # Centres do not carry gradient (the official kernel returns zero grads for them).
    centers = (torch.arange(b, dtype=delta.dtype, device=delta.device)[None, :] * width + width / 2.0).detach()
    dist = (scaled[:, None, :] - centers[:, :, None]).abs()  # [N,B,T]
    if kernel.startswith("linear"):
        k = torch.relu(LINEAR_ONE - dist)
    elif kernel.startswith("delta"):
        k = (dist <= (width.detach() / 2.0)[:, :, None]).to(delta.dtype)
        # Pass the gradient to δ inside the radius as the official delta backward does.
        k = k + (scaled[:, None, :] - scaled[:, None, :].detach()) * k
    else:
        raise ValueError(f"unknown kernel {kernel!r}")
    if kernel.endswith("_normalized"):
        count = (k != 0).sum(dim=2, keepdim=True).clamp_min(1).to(k.dtype)
        k = k / count
    return k


def drop_empty(kraw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Move active bins (row sum != 0) to the front in increasing b; slice to the batch max.

    Written as a sort so it traces to ONNX (TopK + GatherElements + Slice) and handles N > 1
    with the official zero padding. Returns (K [N,B',T], k [N]).
    """
    n, b, t = kraw.shape
    active = kraw.sum(dim=2) != 0  # NaN != 0 is active, as in the official code
    order_key = (~active).to(torch.int64) * b + torch.arange(b, device=kraw.device)[None, :]
    order = torch.argsort(order_key, dim=1)
    kept = kraw * active.to(kraw.dtype)[:, :, None]  # inactive rows are exactly 0 already; keeps NaN rows
    sorted_k = torch.gather(kept, 1, order[:, :, None].expand(n, b, t))
    k = active.sum(dim=1)
    return sorted_k[:, : k.max()], k


def aggregate(x: torch.Tensor, kmat: torch.Tensor) -> torch.Tensor:
    """[N,C,T,H,W] x [N,B',T] -> [N,C,B',H,W] (bmm over flattened C*H*W, as official)."""
    n, c, t, h, w = x.shape
    xf = x.permute(0, 2, 1, 3, 4).reshape(n, t, c * h * w)
    y = torch.bmm(kmat, xf)
    return y.reshape(n, -1, c, h, w).permute(0, 2, 1, 3, 4)


def sgs_step(
    x: torch.Tensor,
    delta: torch.Tensor,
    num_bins: int = -1,
    kernel: str = "linear",
    drop_bins: bool = True,
    guard: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """SGS after the embedding net. Returns (Y [N,C,B',H,W], k [N] active bins per sample)."""
    if guard:
        delta = guard_zero_max(delta)
    kraw = bin_weights(delta, num_bins, kernel)
    if drop_bins:
        kmat, k = drop_empty(kraw)
    else:
        kmat, k = kraw, (kraw.sum(dim=2) != 0).sum(dim=1)
    return aggregate(x, kmat), k


class TSLayer(nn.Module):
    """The official SGS layer: embedding net (fc, bn) and temporal sampling."""

    def __init__(self, spec: SGSSpec):
        super().__init__()
        self.spec = spec
        c = spec.channels
        self.fc = nn.Sequential(
            nn.Linear(c, c // 2, bias=True),
            nn.ReLU(inplace=True) if spec.use_relu else Swish(),
            nn.Linear(c // 2, spec.latent_dim, bias=True),
        )
        self.bn = nn.BatchNorm1d(spec.latent_dim, eps=1e-5, momentum=0.1)
        # When True, samples of a batch are sampled independently (no padding to the batch max);
        # the model's forward then runs the layers after SGS per group of equal B'.
        self.batch_independent = False

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Z [N,L,T]: spatial mean per frame -> fc over channels -> BatchNorm1d."""
        # adaptive_avg_pool3d, not mean(): same value, but its summation order is the official
        # one, which keeps Z bit-identical to the reference (B' is a threshold on Z).
        if torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
            g = x.mean(dim=(3, 4))  # ReduceMean in ONNX; adaptive pooling needs a constant size
        else:
            g = nn.functional.adaptive_avg_pool3d(x, (x.shape[2], 1, 1)).flatten(2)
        z = self.fc(g.transpose(1, 2)).transpose(1, 2)
        return self.bn(z)

    def distances(self, x: torch.Tensor) -> torch.Tensor:
        return distances(self.embed(x), self.spec.distance)

    def sample(self, x: torch.Tensor, delta: torch.Tensor, guard: bool = False):
        return sgs_step(x, delta, self.spec.num_bins, self.spec.kernel, self.spec.drop_bins, guard)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Official semantics: returns (Y, mask) with Y zero-padded to the batch max B'."""
        y, _ = self.sample(x, self.distances(x))
        n, c, b, h, w = y.shape
        mask = y.permute(0, 2, 1, 3, 4).reshape(n, b, -1).sum(dim=2) != 0
        return y, mask
