"""Security rules that hold for every command: a checkpoint's pickle never runs its code (whichever
command reads it), and importing cosa opens no network connection. The rules for dataset paths
and YAML tags are tested with their modules (data/test_layouts.py, config/test_load.py);
docs/reliability.md lists every rule with the test that pins it."""

import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import cli_error


class WritesMarker:
    """Unpickling this would create ``path``: a stand-in for any code in a pickle."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return open, (str(self.path), "w")


@pytest.mark.parametrize(
    "write",
    [
        pytest.param(lambda path, evil: path.write_bytes(pickle.dumps(evil, protocol=2)), id="plain-pickle"),
        pytest.param(
            lambda path, evil: torch.save({"format": "cosa-checkpoint", "config": evil}, path), id="torch-save"
        ),
    ],
)
def test_checkpoint_pickle_with_code_is_refused_not_run(tmp_path, capsys, write):
    marker = tmp_path / "marker"
    pickle.loads(pickle.dumps(WritesMarker(marker))).close()
    assert marker.exists()  # the payload is live: plain unpickling runs it
    marker.unlink()
    path = tmp_path / "evil.pt"
    write(path, WritesMarker(marker))
    line = cli_error(capsys, "evaluate", "--checkpoint", path, "--data", tmp_path)
    assert f"{path}: cannot read checkpoint" in line
    assert not marker.exists()


@pytest.mark.slow
def test_import_and_help_open_no_network_connection():
    script = """
import socket, sys
attempts = []
def refuse(*args, **kwargs):
    attempts.append(args[1:] or args)
    raise OSError("network disabled by the test")
socket.socket.connect = socket.socket.connect_ex = refuse
socket.getaddrinfo = socket.create_connection = refuse
import cosa
from cosa.cli.main import main
try:
    main(["--help"])
except SystemExit as done:
    assert done.code == 0, done.code
print("network attempts:", attempts)
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "network attempts: []" in result.stdout and "usage: cosa" in result.stdout
