"""What a run writes as it goes: ``metrics.jsonl`` (one JSON object a line) and TensorBoard."""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path

from cosa.files import cannot, write_text_atomically


def setup_logging(is_main: bool = True) -> None:
    """Messages as plain lines; only the main process tells more than warnings."""
    logging.basicConfig(level=logging.INFO if is_main else logging.WARNING, format="%(message)s", force=True)


class RunLog:
    """Append-only scalar log of a run; only the main process writes.

    Resuming at iteration t drops what a stopped run logged after its checkpoint, and, when the
    evaluation of t is to be run again (``evaluation_pending``), that evaluation's record.
    """

    def __init__(
        self, run_dir: Path, enabled: bool, resume_from: int | None = None, evaluation_pending: bool = False
    ) -> None:
        self.enabled = enabled
        self.path = run_dir / "metrics.jsonl"
        self.writer = None
        if not enabled:
            return
        if resume_from is not None and self.path.exists():
            self._truncate_after(resume_from, evaluation_pending)
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(
            str(run_dir / "tensorboard"), purge_step=resume_from + 1 if resume_from is not None else None
        )

    def _truncate_after(self, iteration: int, evaluation_pending: bool) -> None:
        """Keep the records up to ``iteration``; atomically, so that a kill meanwhile loses nothing."""

        def kept(record: dict) -> bool:
            redone = evaluation_pending and any(key.startswith("val/") for key in record)
            return record["iteration"] < iteration or record["iteration"] == iteration and not redone

        lines = [json.dumps(record) + "\n" for record in _records(self.path) if kept(record)]
        write_text_atomically(self.path, "".join(lines))

    def write(self, iteration: int, values: dict[str, float]) -> None:
        if not self.enabled:
            return
        record = {"iteration": iteration, "time": round(time.time(), 3), **values}
        try:
            with open(self.path, "a") as stream:
                stream.write(json.dumps(record) + "\n")
        except OSError as error:
            raise cannot("write", self.path, error) from None
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
