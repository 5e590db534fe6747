"""A checkpoint is data, never code: weights that would run code when unpickled are refused."""

import os
import pickle

import pytest

pytest.importorskip("torch", reason="loading a checkpoint needs torch (the [compress] extra)")

from conftest import save_checkpoint

from compressor.cli import main


class RunsCode:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def test_a_checkpoint_whose_weights_would_run_code_is_refused(tmp_path, capsys, monkeypatch):
    folder = save_checkpoint("bert", tmp_path / "ckpt")
    (folder / "model.safetensors").unlink()
    with open(folder / "pytorch_model.bin", "wb") as f:
        pickle.dump({"payload": RunsCode()}, f)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(["compress", str(folder), "--method", "none", "--name", "x", "--out", str(tmp_path / "out")])
    assert exit_info.value.code == 2
    assert not (tmp_path / "PWNED").exists()
    line = capsys.readouterr().err.strip()
    assert line.startswith("compressor: error: cannot load") and "\n" not in line
