"""compressor/inputs.py: a wrong model path is named for what it is, fast, without torch."""

import pytest

from compressor.errors import InputError
from compressor.inputs import check_checkpoint


def test_a_missing_path_says_it_does_not_exist(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        check_checkpoint(str(tmp_path / "nowhere"))


def test_a_file_is_not_a_checkpoint_folder(tmp_path):
    (tmp_path / "model.bin").write_bytes(b"")
    with pytest.raises(InputError, match="is a file"):
        check_checkpoint(str(tmp_path / "model.bin"))


def test_a_folder_without_config_says_so(tmp_path):
    with pytest.raises(InputError, match=r"no config\.json"):
        check_checkpoint(str(tmp_path))
