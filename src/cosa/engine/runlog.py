"""What a run writes as it goes: ``metrics.jsonl`` (one JSON object a line) and TensorBoard."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path


class RunLog:
    """Append-only scalar log of a run; only the main process writes."""

    def __init__(self, run_dir: Path, enabled: bool, resume_from: int | None = None) -> None:
        self.enabled = enabled
        self.path = run_dir / "metrics.jsonl"
        self.writer = None
        if not enabled:
            return
        if resume_from is not None and self.path.exists():
            self._truncate_after(resume_from)
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(run_dir / "tensorboard"), purge_step=resume_from + 1 if resume_from is not None else None)

    def _truncate_after(self, iteration: int) -> None:
        """Drop entries a crashed run wrote after the checkpoint we resume from."""
        kept = [json.dumps(record) for record in _records(self.path) if record["iteration"] <= iteration]
        self.path.write_text("".join(line + "\n" for line in kept))

    def write(self, iteration: int, values: dict[str, float]) -> None:
        if not self.enabled:
            return
        record = {"iteration": iteration, "time": round(time.time(), 3), **values}
        with open(self.path, "a") as stream:
            stream.write(json.dumps(record) + "\n")
        for key, value in values.items():
            if isinstance(value, (int, float)) and not math.isnan(value):
                self.writer.add_scalar(key, value, iteration)
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _records(path: Path) -> list[dict]:
    """The complete records of a log; a process killed mid-write leaves a partial last line."""
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def read_metrics(run_dir: str | Path) -> list[dict]:
    return _records(Path(run_dir) / "metrics.jsonl")
