"""Run by ``torchrun`` from test_trainer.py and test_gpu.py: train the tiny config, save this rank's
networks and how the processes were joined.

    torchrun ... ddp_worker.py DATA RUN_DIR RECIPE [DEVICE]      (DEVICE: cpu, the default, or cuda)
"""

import copy
import sys
from pathlib import Path

import torch

from cosa.config import load_config
from cosa.engine.distributed import init_distributed, shutdown
from cosa.engine.trainer import Trainer

from conftest import TINY_OVERRIDES


def main(data: str, run_dir: str, recipe: str, device: str = "cpu") -> None:
    torch.set_num_threads(1)
    cfg = load_config("demo", recipe, data, [*TINY_OVERRIDES, f"train.device={device}"])
    dist = init_distributed(cfg.train.device)
    trainer = Trainer(cfg, run_dir, dist)
    initial = copy.deepcopy(trainer.assignment.state_dict())
    metrics = trainer.fit()
    state = {
        "online": trainer.online.state_dict(),
        "assignment": trainer.assignment.state_dict(),
        "initial": initial,
        "iteration": trainer.iteration,
        "miou": metrics["miou_unmasked"],
        "cam_miou": metrics["cam_miou"],
        "thresholds": list(trainer.objective.thresholds.values().values()),
        "buffer": trainer.objective.thresholds.cam.buffer,
        "backend": torch.distributed.get_backend(),
        "data_parallel": trainer.model is not trainer.online,
    }
    torch.save(state, Path(run_dir) / f"rank{dist.rank}.pt")
    shutdown()


if __name__ == "__main__":
    main(*sys.argv[1:])
