"""Hub names as MODEL (compressor.hub): resolved through a Hugging Face cache laid out here,
in tmp_path, exactly as huggingface_hub writes it. Nothing here reaches the network: the
cache is offline, or the Hub's address is a closed local port."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

# compressor.hub is written for huggingface_hub below 1.0, which the [compress] extra pins;
# a serving-only install may carry a newer one (tokenizers pulls it in) with other errors.
if int(pytest.importorskip("huggingface_hub").__version__.split(".")[0]) >= 1:
    pytest.skip("compressor.hub needs huggingface_hub<1 (the [compress] extra)", allow_module_level=True)

from huggingface_hub import constants
from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

from compressor import hub
from compressor.cli import main
from compressor.errors import InputError
from compressor.inputs import check_checkpoint

MAIN = "0123456789abcdef0123456789abcdef01234567"  # the commit refs/main points at
TAGGED = "fedcba9876543210fedcba9876543210fedcba98"  # an older commit, tagged v1
UNREACHABLE = "http://127.0.0.1:9"  # the discard port: nothing listens, connections are refused at once


def classifier_files(folder: Path, architecture: str = "BertForSequenceClassification") -> Path:
    """What check_checkpoint reads, without torch: a config, a vocabulary, placeholder weights."""
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"architectures": [architecture], "model_type": "bert"}))
    (folder / "vocab.txt").write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\nhello\n")
    (folder / "model.safetensors").write_bytes(b"never loaded")
    return folder


def cache_repo(cache: Path, repo_id: str, source: Path, commit: str, refs: tuple[str, ...] = ("main",)) -> Path:
    """Put `source`'s files in `cache` as huggingface_hub does: content in blobs/, the commit's
    tree in snapshots/COMMIT/ as relative symlinks to them, and each ref naming the commit."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (repo / "blobs").mkdir(exist_ok=True)
    for file in sorted(source.iterdir()):
        data = file.read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        (snapshot / file.name).symlink_to(Path("..", "..", "blobs", blob.name))
    for ref in refs:
        (repo / "refs" / ref).parent.mkdir(parents=True, exist_ok=True)
        (repo / "refs" / ref).write_text(commit)  # no newline, as huggingface_hub writes it
    return snapshot


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory) -> Path:
    pytest.importorskip("torch", reason="building a checkpoint needs torch (the [compress] extra)")
    from conftest import save_checkpoint

    return save_checkpoint("bert", tmp_path_factory.mktemp("tiny") / "bert")


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """An empty offline Hugging Face cache. huggingface_hub reads its environment when first
    imported, so this process's copy (constants) is patched as well as the environment."""
    home = tmp_path / "hf"
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_CACHE", str(home / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(home / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.chdir(tmp_path)  # relative names are looked for as folders here first
    (home / "hub").mkdir(parents=True)
    return home / "hub"


def run_cli(capsys, *argv: str) -> tuple[int, list[str]]:
    with pytest.raises(SystemExit) as exit_info:
        main(list(argv))
    return exit_info.value.code, capsys.readouterr().err.strip().splitlines()


@pytest.mark.parametrize("model, commit", [("org/tiny-bert", MAIN), ("org/tiny-bert@v1", TAGGED),
                                           (f"org/tiny-bert@{TAGGED}", TAGGED)])
def test_compress_a_cached_hub_model_records_repo_and_commit(tiny_bert, cache, tmp_path, capsys, model, commit):
    cache_repo(cache, "org/tiny-bert", tiny_bert, MAIN)
    cache_repo(cache, "org/tiny-bert", tiny_bert, TAGGED, refs=("v1",))
    main(["compress", model, "--method", "none", "--name", "hub", "--out", str(tmp_path / "models")])
    assert capsys.readouterr().out.startswith(f"wrote {tmp_path / 'models' / 'hub'}: none")
    manifest = json.loads((tmp_path / "models" / "hub" / "variant.json").read_text())
    assert manifest["base_model"] == f"org/tiny-bert@{commit}"  # itself a MODEL that compresses the same files


def test_a_bare_name_resolves_too(cache, tmp_path):
    cache_repo(cache, "tiny-bert", classifier_files(tmp_path / "source"), MAIN)
    checkpoint = check_checkpoint("tiny-bert")
    assert checkpoint.folder == cache / "models--tiny-bert" / "snapshots" / MAIN
    assert checkpoint.name == f"tiny-bert@{MAIN}"


def test_a_local_folder_wins_over_the_hub(cache, tmp_path, monkeypatch):
    cache_repo(cache, "org/tiny-bert", classifier_files(tmp_path / "source"), MAIN)
    shutil.copytree(tmp_path / "source", tmp_path / "org" / "tiny-bert")
    monkeypatch.setattr(hub, "snapshot", lambda *args: pytest.fail("the Hub was consulted"))
    assert check_checkpoint("org/tiny-bert") == hub.Checkpoint(Path("org/tiny-bert"), "org/tiny-bert")
    (tmp_path / "org" / "empty").mkdir()
    cache_repo(cache, "org/empty", tmp_path / "source", MAIN)
    with pytest.raises(InputError, match="org/empty is not a checkpoint folder"):
        check_checkpoint("org/empty")  # the folder, not the cached repo of the same name


@pytest.mark.parametrize("name", ["./nowhere", "a/b/c", "org/x..y", "org--x/y", "org/x.git", "has space", "org/x@"])
def test_names_that_are_no_repo_id_keep_the_folder_message(cache, monkeypatch, name):
    monkeypatch.setattr(hub, "snapshot", lambda *args: pytest.fail("the Hub was consulted"))
    with pytest.raises(InputError, match=f"^{re.escape(name)} does not exist; give a checkpoint folder"):
        check_checkpoint(name)


def test_a_cached_model_that_is_no_classifier_is_refused(cache, tmp_path, capsys):
    cache_repo(cache, "org/encoder", classifier_files(tmp_path / "source", "BertModel"), MAIN)
    code, lines = run_cli(capsys, "compress", "org/encoder", "--method", "none", "--name", "x",
                          "--out", str(tmp_path / "out"))
    assert code == 2
    assert lines == ["compressor: error: org/encoder is not a sequence classifier (architectures: BertModel)"]


def test_an_uncached_revision_offline_is_one_line(cache, tmp_path, capsys):
    cache_repo(cache, "org/tiny-bert", classifier_files(tmp_path / "source"), MAIN)
    code, lines = run_cli(capsys, "compress", "org/tiny-bert@v2", "--method", "none", "--name", "x")
    assert code == 2 and len(lines) == 1
    assert f"org/tiny-bert@v2 is not a local folder, nor in the Hugging Face cache ({cache})" in lines[0]
    assert "`hf download org/tiny-bert --revision v2`" in lines[0]


# A fresh interpreter runs the command with the given environment (huggingface_hub reads
# it on import), then prints which of the slow imports it made.
FRESH_RUN = """
import sys
from compressor.cli import main
try:
    main(sys.argv[1:])
finally:
    print(sorted(name for name in ("torch", "transformers") if name in sys.modules))
"""


def fresh(tmp_path: Path, code: str, *argv: str, **env: str) -> subprocess.CompletedProcess:
    home = tmp_path / "hf"
    clean = {k: v for k, v in os.environ.items() if not k.startswith("HF_") and k != "TRANSFORMERS_OFFLINE"}
    clean.update(HF_HOME=str(home), HF_HUB_CACHE=str(home / "hub"), **env)
    return subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=60,
                          cwd=tmp_path, env=clean, check=False)


@pytest.mark.parametrize("env, why", [
    ({"HF_HUB_OFFLINE": "1"}, "and HF_HUB_OFFLINE is set"),
    ({"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": UNREACHABLE, "HF_HUB_ETAG_TIMEOUT": "1", "HF_HUB_DOWNLOAD_TIMEOUT": "1"},
     f"and the Hub at {UNREACHABLE} cannot be reached"),
])
def test_an_uncached_model_is_refused_in_one_line_before_torch_loads(tmp_path, env, why):
    result = fresh(tmp_path, FRESH_RUN, "compress", "org/absent", "--method", "none", "--name", "x", **env)
    assert result.returncode == 2, result.stderr
    line = (f"compressor: error: org/absent is not a local folder, nor in the Hugging Face cache "
            f"({tmp_path / 'hf' / 'hub'}), {why}; download it where the network allows with `hf download org/absent`, "
            "or pass a local folder")
    assert result.stderr.splitlines() == [line]
    assert result.stdout == "[]\n"  # neither torch nor transformers was imported


def test_an_unreachable_hub_falls_back_to_the_cache(tmp_path):
    cache_repo(tmp_path / "hf" / "hub", "org/tiny-bert", classifier_files(tmp_path / "source"), MAIN)
    result = fresh(tmp_path, "from compressor.inputs import check_checkpoint; print(check_checkpoint('org/tiny-bert'))",
                   HF_HUB_OFFLINE="0", HF_ENDPOINT=UNREACHABLE, HF_HUB_ETAG_TIMEOUT="1", HF_HUB_DOWNLOAD_TIMEOUT="1")
    assert result.returncode == 0, result.stderr
    assert f"name='org/tiny-bert@{MAIN}'" in result.stdout


def test_downloads_only_what_loading_reads(cache, tmp_path, monkeypatch):
    """Config, tokenizer and safetensors weights; pickled weights only where a repo has no safetensors."""
    import huggingface_hub

    calls = []
    folder = classifier_files(tmp_path / "snapshots" / MAIN)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda repo_id, **kw: calls.append(kw) or str(folder))
    hub.resolve("org/tiny-bert@main")
    assert len(calls) == 1 and calls[0]["revision"] == "main" and calls[0]["local_files_only"] is True
    assert {"config.json", "tokenizer.json", "vocab.txt", "model.safetensors"} <= set(calls[0]["allow_patterns"])
    assert not [p for p in calls[0]["allow_patterns"] if p.endswith((".py", ".bin", ".h5", ".onnx"))]
    (folder / "model.safetensors").unlink()
    calls.clear()
    hub.resolve("org/tiny-bert")
    assert [c["allow_patterns"] for c in calls] == [list(hub.CONFIG_FILES + hub.SAFETENSORS), list(hub.PICKLES)]


@pytest.mark.parametrize("error, message", [
    (RepositoryNotFoundError("404"), "org/x is neither a local folder nor a model on the Hugging Face Hub"),
    (RevisionNotFoundError("404"), "org/x@v9: org/x on the Hugging Face Hub has no revision v9"),
    (OSError("No space left on device\nmore"), "cannot download org/x@v9: No space left on device"),
])
def test_hub_errors_are_input_errors(cache, monkeypatch, error, message):
    import huggingface_hub

    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fail)
    with pytest.raises(InputError) as info:
        check_checkpoint("org/x@v9" if "v9" in message else "org/x")
    assert str(info.value).startswith(message) and "\n" not in str(info.value)
