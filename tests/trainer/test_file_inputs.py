"""Every command's file inputs, fed garbage: one clear line naming the file and the problem, exit 2.

Vocabularies, training configs, checkpoints, manifests and query logs each get files that are not what the
command expects (wrong JSON shape, not JSON, binary, empty, absent). None may end in a traceback, and none may
carry on as if nothing were wrong (a vocabulary without tags trained to ``val mAP nan``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tools.cli import main


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """``darkroom ARGV`` in this process: (exit status, what it printed to stderr and stdout)."""
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's parser.exit / parser.error
        code = exc.code if isinstance(exc.code, int) else 2
    out = capsys.readouterr()
    return code, out.err + out.out


def assert_clear_error(code: int, text: str, names: str) -> None:
    assert code == 2, text
    assert "Traceback" not in text and "KeyError" not in text and "AttributeError" not in text, text
    assert names in text, f"the error does not name {names!r}:\n{text}"


@pytest.fixture
def manifest(tmp_path: Path) -> Path:
    """A well-formed manifest of one real photo."""
    from PIL import Image

    Image.new("RGB", (64, 48), (200, 120, 40)).save(tmp_path / "a.jpg")
    path = tmp_path / "manifest.jsonl"
    path.write_text(json.dumps({"path": "a.jpg", "user_tags": ["beach"], "labels": ["beach"]}) + "\n")
    return path


BAD_VOCABULARIES = {
    "not-a-vocabulary.json": (b'{"not": "a vocab"}', "is not a vocabulary"),
    "a-list.json": (b"[1, 2]", "is not a vocabulary"),
    "not-json.json": (b"garbage{", "is not JSON"),
    "binary.json": (b"\xff\xfe\x00\x01", "is not JSON"),
    "no-tags.json": (b'{"tags": []}', "keeps no tags"),
    "numbers-as-tags.json": (b'{"tags": [1, 2]}', "list of non-empty strings"),
    "twice.json": (b'{"tags": ["cat", "cat"]}', "listed twice"),
    "bad-aliases.json": (b'{"tags": ["cat"], "aliases": {"kitty": "dog"}}', "'aliases'"),
}


@pytest.mark.parametrize("name", sorted(BAD_VOCABULARIES))
def test_train_refuses_a_file_that_is_not_a_usable_vocabulary(name, manifest, tmp_path, capsys):
    content, problem = BAD_VOCABULARIES[name]
    vocab = tmp_path / name
    vocab.write_bytes(content)
    argv = ["train", "--train", str(manifest), "--val", str(manifest), "--vocab", str(vocab)]
    code, text = run([*argv, "--out", str(tmp_path / "out")], capsys)
    assert_clear_error(code, text, name)
    assert problem in text
    assert not (tmp_path / "out" / "checkpoint.pt").exists()


def test_train_names_a_missing_vocabulary(manifest, tmp_path, capsys):
    argv = ["train", "--train", str(manifest), "--val", str(manifest), "--vocab", str(tmp_path / "nope.json")]
    code, text = run([*argv, "--out", str(tmp_path / "out")], capsys)
    assert_clear_error(code, text, "nope.json")


@pytest.mark.parametrize("content", [b"[1, 2]", b"garbage{", b'"a string"', b"\xff\xfe"])
def test_train_refuses_a_config_that_is_not_a_json_object(content, manifest, tmp_path, capsys):
    config = tmp_path / "config.json"
    config.write_bytes(content)
    argv = ["train", "--train", str(manifest), "--val", str(manifest), "--config", str(config)]
    code, text = run([*argv, "--out", str(tmp_path / "out")], capsys)
    assert_clear_error(code, text, "config.json")


@pytest.mark.parametrize("content", [b"", b"\xff\xfe\x00binary", b'{"path": 3}\n', b"not json\n"])
def test_train_refuses_a_manifest_it_cannot_read(content, manifest, tmp_path, capsys):
    bad = tmp_path / "bad-manifest.jsonl"
    bad.write_bytes(content)
    code, text = run(
        ["train", "--train", str(bad), "--val", str(manifest), "--out", str(tmp_path / "o")], capsys
    )
    assert_clear_error(code, text, "bad-manifest.jsonl")


def _bad_checkpoints(tmp_path: Path) -> list[Path]:
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a torch file")
    wrong_dict = tmp_path / "wrong-dict.pt"
    torch.save({"model": "mobilenet_lite_050"}, wrong_dict)
    a_list = tmp_path / "a-list.pt"
    torch.save([1, 2], a_list)
    return [garbage, wrong_dict, a_list, tmp_path / "absent.pt"]


def test_evaluate_and_export_refuse_what_is_not_a_checkpoint(manifest, tmp_path, capsys):
    for ckpt in _bad_checkpoints(tmp_path):
        argv = ["evaluate", "--checkpoint", str(ckpt), "--test", str(manifest), "--out", str(tmp_path / "ev")]
        assert_clear_error(*run(argv, capsys), ckpt.name)
        argv = ["export", "--checkpoint", str(ckpt), "--repo", str(tmp_path / "repo")]
        assert_clear_error(*run(argv, capsys), ckpt.name)
    assert not (tmp_path / "repo").exists() or not any((tmp_path / "repo").rglob("model.*"))


def test_vocab_writes_no_vocabulary_when_no_tag_is_kept(tmp_path, capsys):
    queries = tmp_path / "queries.tsv"
    queries.write_bytes(b"a\tb\tc\n\xff\xfe\n")
    manifest = tmp_path / "tags.jsonl"
    manifest.write_bytes(b"\xff\xfe\x00bin\n")
    out = tmp_path / "vocab.json"
    code, text = run(
        ["vocab", "--queries", str(queries), "--manifest", str(manifest), "--out", str(out)], capsys
    )
    assert_clear_error(code, text, "queries.tsv")
    assert "no tag met the criteria" in text and not out.exists()


def test_export_refuses_a_model_repository_whose_config_is_not_a_triton_config(checkpoint, tmp_path, capsys):
    ckpt = tmp_path / "checkpoint.pt"
    torch.save(checkpoint, ckpt)
    model_dir = tmp_path / "repo" / "tagger"
    model_dir.mkdir(parents=True)
    (model_dir / "config.pbtxt").write_text("garbage {{{ not a config")
    code, text = run(["export", "--checkpoint", str(ckpt), "--repo", str(tmp_path / "repo")], capsys)
    assert_clear_error(code, text, "config.pbtxt")
    assert "is not a Triton model config" in text and not (model_dir / "1").exists()
