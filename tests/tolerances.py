"""Float tolerances derived from the values they bound, not from one machine's measurement.

Two fp32 evaluations of the same network differ because their kernels sum in other orders
(ONNX Runtime and torch pick other conv algorithms on AVX2, AVX-512 and aarch64; the embedding
net's Linear kernels differ across CPUs). The bounds here follow from that:

* One reduction of length K (a conv output: K = C_in/groups * kT * kH * kW), summed in another
  order, differs by at most gamma_K * sum|x_i w_i| (Higham, Accuracy and Stability of Numerical
  Algorithms, 2nd ed., §3.1). The worst case K*u is never reached in practice; the probabilistic
  bound of Higham & Mary (SIAM J. Sci. Comput. 41(5), 2019), lambda * sqrt(K) * u, holds with
  probability >= 1 - 2K exp(-lambda^2 (1-u)^2 / 2): with lambda = 8, better than 1 - 1e-9 for
  every K here. u = 2^-24 (fp32 unit roundoff).
* Through a network of D such layers (BN/ReLU networks keep activations O(1), so each layer
  passes a relative error on at about its size) the layers' rounding errors are independent and
  add in quadrature: rtol_net = lambda * u * sqrt(D * K_max), times the magnitude of the compared
  output (its max |value|: an absolute error on logits scales with how large the logits are).
* SGS: a frame's bin weight is 1 + 2^-23 - |delta - c| with delta = 2B * Delta / max Delta, so a
  relative error eps of Delta moves the SGS outputs by about 2B * eps (README, "Faithful to the
  official code"). Wherever the two sides compute their own Delta, the front's error is
  multiplied by 2B before the back sees it.
* Softmax: d p_i / d z_j = p_i (delta_ij - p_j), whose row sums of |.| are 2 p_i (1 - p_i) <= 1/2,
  so max|dp| <= max|dz| / 2.

These bounds are far above what any one CPU shows (typically 10-100x) yet far below what a real
bug does (a wrong BN, swapped channels, a missing layer change outputs by O(1) relative); tests
check the latter with a deliberately perturbed input where that is cheap.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

U32 = 2.0 ** -24  # fp32 unit roundoff
LAMBDA = 8.0  # Higham–Mary confidence parameter (failure probability < 2K exp(-32) < 1e-9)


@dataclass(frozen=True)
class NetShape:
    depth: int  # reductions (Conv/Linear/Gemm/MatMul) in the network: an upper bound of the path length
    fan_in: int  # the longest reduction (elements summed per output)

    @property
    def rtol(self) -> float:
        """Relative error bound of the whole network under another summation order."""
        return LAMBDA * U32 * math.sqrt(self.depth * self.fan_in)


def torch_split_shapes(model, xs) -> tuple[NetShape, NetShape]:
    """(front, back) shapes of a torch ATFR model: the reductions that run in
    ``front_with_distances`` (the SGS stage and its embedding net) and the rest."""
    import torch

    layers = [m for m in model.modules()
              if isinstance(m, (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d, torch.nn.Linear))]
    fired: set[int] = set()
    hooks = [m.register_forward_hook(lambda mod, i, o: fired.add(id(mod))) for m in layers]
    try:
        with torch.no_grad():
            model.front_with_distances(xs)
    finally:
        for h in hooks:
            h.remove()

    def shape(ms) -> NetShape:
        ks = [int(m.weight[0].numel()) for m in ms]
        return NetShape(max(1, len(ks)), max(ks, default=1))

    return shape([m for m in layers if id(m) in fired]), shape([m for m in layers if id(m) not in fired])


def onnx_shape(path) -> NetShape:
    """Depth and longest reduction of an ONNX graph (Conv, Gemm and MatMul with a constant weight)."""
    import onnx
    from onnx import numpy_helper

    g = onnx.load(str(path)).graph
    inits = {t.name: t for t in g.initializer}
    ks = []
    for n in g.node:
        if n.op_type in ("Conv", "Gemm", "MatMul") and len(n.input) > 1 and n.input[1] in inits:
            w = numpy_helper.to_array(inits[n.input[1]])
            if n.op_type == "Conv":
                ks.append(int(np.prod(w.shape[1:])))
            elif n.op_type == "Gemm" and any(a.name == "transB" and a.i for a in n.attribute):
                ks.append(int(w.shape[-1]))
            else:
                ks.append(int(w.shape[0]))
    return NetShape(max(1, len(ks)), max(ks, default=1))


def sgs_amplification(bins: int) -> float:
    """How much SGS multiplies a relative error of Delta: 2B (see the module docstring)."""
    return 2.0 * bins


def magnitude(x) -> float:
    """The scale an absolute error on ``x`` is measured against (max |x|, at least 1: logits near
    0 still carry the rounding of the terms that cancelled to give them)."""
    return max(1.0, float(np.max(np.abs(np.asarray(x, dtype=np.float64)))))


def end_to_end_atol(front: NetShape, back: NetShape, bins: list[int], out) -> float:
    """Logits of two pipelines that each compute their own Delta: the front's error, amplified
    2B by SGS, plus the back's own, relative to the logits' magnitude."""
    amp = 1.0 + max((sgs_amplification(b) for b in bins), default=0.0)
    return (amp * front.rtol + back.rtol) * magnitude(out)


def prob_atol(logit_atol: float) -> float:
    """max|dp| <= max|dz| / 2 (softmax Jacobian, module docstring)."""
    return 0.5 * logit_atol
