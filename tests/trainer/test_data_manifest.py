"""Manifests: a collection with missing, corrupt and non-image files trains anyway; bad input is a clear error."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

from trainer.data.manifest import ManifestError, load_photo_set, read_manifest
from trainer.data.scenes import render, sample_scene
from trainer.train import cli
from trainer.vocab.vocabulary import synthetic_vocabulary


def _collection(root: Path, n: int = 24) -> Path:
    """``n`` small photos, plus one missing, one corrupt JPEG and one text file posing as a photo."""
    rng = random.Random(3)
    root.mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(n):
        scene = sample_scene(rng)
        render(scene, (80, 60), rng).save(root / f"p{i}.jpg", quality=85)
        lines.append({"path": f"p{i}.jpg", "user_tags": scene.labels[:1] + ["2016"], "labels": scene.labels})
    (root / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 50)
    (root / "notes.jpg").write_text("not a photo at all")
    for name in ("missing.jpg", "corrupt.jpg", "notes.jpg"):
        lines.append({"path": name, "user_tags": ["sea"], "labels": ["sea"]})
    manifest = root / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return manifest


def test_missing_corrupt_and_non_image_files_are_skipped_counted_and_listed(tmp_path, capsys):
    manifest = _collection(tmp_path / "photos")
    out = tmp_path / "run"
    code = cli(["--train", str(manifest), "--val", str(manifest), "--out", str(out),
                "--set", "epochs=1", "--set", "size=32", "--set", "batch_size=8"])  # fmt: skip
    assert code == 0
    listed = json.loads((out / "skipped.json").read_text())
    # each bad file is skipped once for training and once for validation
    assert sorted({Path(s["source"]).name for s in listed}) == ["corrupt.jpg", "missing.jpg", "notes.jpg"]
    assert len(listed) == 6
    ckpt = torch.load(out / "checkpoint.pt", weights_only=False)
    assert len(ckpt["skipped"]) == 6 and len(ckpt["thresholds"]) == 15
    assert "skipped 6" in capsys.readouterr().out


def test_decode_cache_is_reused(tmp_path):
    manifest = _collection(tmp_path / "photos", n=4)
    encode = synthetic_vocabulary().encode
    first = load_photo_set(manifest, encode, 32, cache_dir=tmp_path / "cache")
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 1
    second = load_photo_set(manifest, encode, 32, cache_dir=tmp_path / "cache")
    assert (first.images == second.images).all() and first.skipped == second.skipped
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 1


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("not json", "line 2.*not JSON"),
        ('{"user_tags": ["sea"]}', "exactly one of 'path' or 'url'"),
        ('{"path": "a.jpg", "url": "file:///a.jpg", "labels": []}', "exactly one of"),
        ('{"path": "a.jpg"}', "'user_tags' or 'labels'"),
        ('{"path": "a.jpg", "labels": "sea"}', "'labels' must be a list of strings"),
        ('{"path": "a.jpg", "labels": ["sea"], "split": 3}', "'split' must be a string"),
    ],
)
def test_malformed_manifest_lines_are_errors_naming_line_and_field(tmp_path, line, message):
    manifest = tmp_path / "m.jsonl"
    manifest.write_text('{"path": "ok.jpg", "labels": ["sea"]}\n' + line + "\n")
    with pytest.raises(ManifestError, match=message):
        read_manifest(manifest)


def test_urls_and_splits(tmp_path):
    manifest = _collection(tmp_path / "photos", n=2)
    rows = [json.loads(x) for x in manifest.read_text().splitlines()][:2]
    rows[0] = {
        "url": (tmp_path / "photos" / rows[0]["path"]).as_uri(),
        "labels": rows[0]["labels"],
        "split": "a",
    }
    rows[1]["split"] = "b"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    data = load_photo_set(manifest, synthetic_vocabulary().encode, 32, split="a")
    assert (
        data.images.shape == (1, 32, 32, 3) and data.user_targets is None and data.clean_targets is not None
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "loss=hinge"], "option loss='hinge'"),
        (["--set", "nope=1"], "unknown option 'nope'"),
        (["--set", "epochs=two"], "option epochs='two'"),
        (["--set", "epochs=0"], "option epochs=0"),
        (["--set", "init_from=/no/such.pt"], "option init_from="),
    ],
)
def test_a_wrong_option_is_a_clear_error_naming_it(tmp_path, capsys, args, message):
    manifest = _collection(tmp_path / "photos", n=2)
    with pytest.raises(SystemExit) as exit_info:
        cli(["--train", str(manifest), "--val", str(manifest), "--out", str(tmp_path / "o"), *args])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_a_missing_manifest_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli(
            [
                "--train",
                str(tmp_path / "none.jsonl"),
                "--val",
                str(tmp_path / "none.jsonl"),
                "--out",
                str(tmp_path),
            ]
        )
    assert exit_info.value.code == 2 and "does not exist" in capsys.readouterr().err
