"""Torch wrappers that expose a VideoNet's front and back as plain graph functions."""

from __future__ import annotations

import torch
import torch.nn as nn

from atfr.models.base import VideoNet


class Front(nn.Module):
    """clip{p} -> feat{p} for every pathway, then dist{p} for every SGS pathway."""

    def __init__(self, model: VideoNet):
        super().__init__()
        self.model = model
        self.sgs_pathways = sorted(model.ts_layer_map())
        # A new Module starts in train mode; torch.onnx.export restores the wrapper's mode
        # recursively after tracing, which would leave the wrapped model with train-mode BN.
        self.eval()

    def forward(self, *clips: torch.Tensor):
        feats, dists = self.model.front_with_distances(list(clips))
        return tuple(feats) + tuple(dists[p] for p in self.sgs_pathways)


class Back(nn.Module):
    """sgs{p} / feat{p} (temporal length T' per SGS pathway) -> logits."""

    def __init__(self, model: VideoNet):
        super().__init__()
        self.model = model
        self.eval()  # see Front

    def forward(self, *xs: torch.Tensor):
        return self.model.back(list(xs))


def front_output_names(model: VideoNet) -> list[str]:
    n = model.num_pathways
    return [f"feat{p}" for p in range(n)] + [f"dist{p}" for p in sorted(model.ts_layer_map())]


def back_input_names(model: VideoNet) -> list[str]:
    layers = model.ts_layer_map()
    return [f"sgs{p}" if p in layers else f"feat{p}" for p in range(model.num_pathways)]
