"""The split interface every zoo model implements.

A model is ``front -> SGS -> back``. ``front`` returns one tensor per pathway: the pre-ReLU
output of the SGS stage (the tensor SGS reads; pathways without SGS pass through unchanged).
``back`` takes the per-pathway tensors with whatever temporal length SGS kept and returns
logits. The export, the runtime and the FLOP counter all rely on this contract only.
"""

from __future__ import annotations

from collections import defaultdict

import torch
import torch.nn as nn

from atfr.spec import InputSpec, SGSSpec

from .sgs import TSLayer


class VideoNet(nn.Module):
    num_pathways: int = 1

    def __init__(self) -> None:
        super().__init__()
        # Batch-independent SGS (the runtime's semantics): each sample keeps its own B'; the
        # back runs once per group of samples with equal B'. False = official zero padding.
        self.batch_independent = False

    # -- to implement -------------------------------------------------------------------------
    def front(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        raise NotImplementedError

    def back(self, xs: list[torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def ts_layer_map(self) -> dict[int, TSLayer]:
        """pathway index -> its SGS layer (empty for static models)."""
        return {}

    input_spec: InputSpec

    # -- shared -------------------------------------------------------------------------------
    @property
    def sgs_specs(self) -> list[SGSSpec]:
        return [ts.spec for _, ts in sorted(self.ts_layer_map().items())]

    def front_with_distances(self, xs: list[torch.Tensor]) -> tuple[list[torch.Tensor], dict[int, torch.Tensor]]:
        feats = self.front(xs)
        dists = {p: ts.distances(feats[p]) for p, ts in self.ts_layer_map().items()}
        return feats, dists

    def forward(self, xs: list[torch.Tensor] | torch.Tensor) -> torch.Tensor:
        return self.forward_with_bprime(xs)[0]

    def forward_with_bprime(self, xs, guard: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits [N,K] and B' [N, num_sgs]: per-sample k, as each sample would see at batch 1."""
        if isinstance(xs, torch.Tensor):
            xs = [xs]
        feats, dists = self.front_with_distances(list(xs))
        layers = self.ts_layer_map()
        n = feats[0].shape[0]
        if not layers:
            return self.back(feats), torch.zeros((n, 0), dtype=torch.int64)
        if not self.batch_independent:
            ks = []
            for p, ts in sorted(layers.items()):
                feats[p], k = ts.sample(feats[p], dists[p], guard=guard)
                ks.append(k)
            return self.back(feats), torch.stack(ks, dim=1)
        # Per sample: sample each clip alone, then run the back per group of equal B'.
        per_sample: list[list[torch.Tensor]] = []
        kvec = torch.zeros((n, len(layers)), dtype=torch.int64)
        for i in range(n):
            row = [f[i : i + 1] for f in feats]
            for j, (p, ts) in enumerate(sorted(layers.items())):
                row[p], k = ts.sample(row[p], dists[p][i : i + 1], guard=guard)
                kvec[i, j] = k[0]
            per_sample.append(row)
        groups: dict[tuple, list[int]] = defaultdict(list)
        for i in range(n):
            groups[tuple(kvec[i].tolist())].append(i)
        out: list[torch.Tensor | None] = [None] * n
        for idx in groups.values():
            batch = [torch.cat([per_sample[i][p] for i in idx], 0) for p in range(len(feats))]
            logits = self.back(batch)
            for j, i in enumerate(idx):
                out[i] = logits[j]
        return torch.stack(out, 0), kvec  # type: ignore[arg-type]
