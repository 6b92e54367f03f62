"""Plain dataclasses that describe an SGS layer and a model's input, shared by every stage.

These travel in checkpoints (ours), the export manifest, the plugin attributes and the runtime,
so they hold only JSON-friendly values and import nothing heavy.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

DISTANCES = ("L2", "L1", "Cosine", "Mahal", "magnitude")
KERNELS = ("linear", "linear_normalized", "delta", "delta_normalized")


@dataclass(frozen=True)
class SGSSpec:
    """One SGS layer. ``num_bins == -1`` means B = T of the input at run time."""

    name: str = "s2.ts_layer"  # state-dict prefix of the layer
    pathway: int = 0
    channels: int = 32
    latent_dim: int = 8
    num_bins: int = -1
    distance: str = "L2"
    kernel: str = "linear"
    drop_bins: bool = True
    use_relu: bool = True  # False: Swish in the embedding net, as the official USE_RELU flag

    def __post_init__(self) -> None:
        if self.distance not in DISTANCES:
            raise ValueError(f"unknown SGS distance {self.distance!r}; expected one of {DISTANCES}")
        if self.kernel not in KERNELS:
            raise ValueError(f"unknown SGS kernel {self.kernel!r}; expected one of {KERNELS}")
        if self.num_bins == 0 or self.num_bins < -1:
            raise ValueError(f"num_bins must be -1 (= T) or >= 1, got {self.num_bins}")

    def bins_for(self, t: int) -> int:
        return t if self.num_bins == -1 else self.num_bins

    @property
    def kernel_base(self) -> str:
        return "delta" if self.kernel.startswith("delta") else "linear"

    @property
    def normalized(self) -> bool:
        return self.kernel.endswith("_normalized")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SGSSpec":
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


@dataclass(frozen=True)
class InputSpec:
    """How a clip is sampled and preprocessed, exactly as the model's test transform."""

    num_frames: int = 32
    sampling_rate: int = 1
    target_fps: float = 30.0
    crop_size: int = 224
    short_side: int = 256  # short-side resize before the centre crop
    mean: tuple[float, float, float] = (0.45, 0.45, 0.45)
    std: tuple[float, float, float] = (0.225, 0.225, 0.225)
    channel_order: str = "RGB"
    # SlowFast: slow pathway = fast frames at linspace(0, T-1, T // alpha), truncated to int.
    slowfast_alpha: int = 0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["mean"] = list(self.mean)
        d["std"] = list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "InputSpec":
        kw = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        for k in ("mean", "std"):
            if k in kw:
                kw[k] = tuple(float(v) for v in kw[k])
        return cls(**kw)

    @property
    def num_pathways(self) -> int:
        return 2 if self.slowfast_alpha else 1


@dataclass
class ModelCard:
    """What a deployable model is: architecture config, labels, input and SGS layers."""

    arch: str
    arch_config: dict[str, Any]
    num_classes: int
    labels: list[str] = field(default_factory=list)
    input: InputSpec = field(default_factory=InputSpec)
    sgs: list[SGSSpec] = field(default_factory=list)

    def label(self, i: int) -> str:
        return self.labels[i] if 0 <= i < len(self.labels) else str(i)
