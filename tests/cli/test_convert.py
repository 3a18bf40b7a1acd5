"""``cosa convert-official``: a cosa checkpoint given as the official file is named as one, and
nothing is written. docs/reliability.md lists the case with its test."""

from conftest import cli_error


def test_converting_a_cosa_checkpoint_says_it_needs_no_conversion(tmp_path, capsys, checkpoint):
    line = cli_error(capsys, "convert-official", checkpoint, tmp_path / "out.pt")
    assert f"{checkpoint}: is a cosa checkpoint already" in line and not (tmp_path / "out.pt").exists()
