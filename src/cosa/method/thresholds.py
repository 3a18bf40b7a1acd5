"""The CPL thresholds (δ_h, δ_l) of the final and auxiliary CAMs.

The released recipe keeps them fixed. They are state of the run (saved in checkpoints, logged)
so that the paper's dynamic threshold search (METHOD.md §7.1) can replace ``update`` without
touching the training loop.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from cosa.config.schema import MethodConfig


@dataclass
class CplThresholds:
    cam_high: float
    cam_low: float
    aux_high: float
    aux_low: float

    @classmethod
    def from_config(cls, cfg: MethodConfig) -> "CplThresholds":
        return cls(cfg.cam_thresholds.high, cfg.cam_thresholds.low, cfg.aux_cam_thresholds.high, cfg.aux_cam_thresholds.low)

    def state_dict(self) -> dict[str, float]:
        return asdict(self)

    def load_state_dict(self, state: dict[str, float]) -> None:
        for key, value in state.items():
            setattr(self, key, float(value))
