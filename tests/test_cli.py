"""``darkroom --help`` lists every subcommand, each with its one-line description."""

from __future__ import annotations

import subprocess
import sys

from tools.cli import PASSTHROUGH, build_parser


def test_help_lists_every_subcommand_with_its_description() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "tools.cli", "--help"], capture_output=True, text=True, timeout=60, check=True
    )
    text = " ".join(proc.stdout.split())  # argparse wraps long descriptions
    commands = build_parser()._subparsers._group_actions[0].choices  # noqa: SLF001 - argparse keeps them here
    assert set(PASSTHROUGH) <= set(commands)
    for name in commands:
        assert f" {name} " in text, f"{name} missing from darkroom --help"
    for name, (_, _, description) in PASSTHROUGH.items():
        assert f"{name} {description}" in text, f"{name}: {description!r} missing from darkroom --help"


def test_model_general_writes_the_onnx_runtime_variant_for_ngc_triton(tmp_path) -> None:
    """`darkroom model --general --backend onnxruntime`: the general tagger as the Kubernetes cpu overlay
    serves it (NGC Triton's ONNX Runtime backend for scores, the Python-backend front for tags)."""
    from tools.cli import main
    from trainer.export import read_model_config

    assert main(["model", "--general", "--backend", "onnxruntime", "--repo", str(tmp_path)]) == 0
    assert (tmp_path / "tagger_onnx" / "1" / "model.onnx").is_file()
    assert not (tmp_path / "tagger" / "1" / "model.onnx").exists()  # the front holds no weights
    scores = read_model_config(tmp_path / "tagger_onnx" / "config.pbtxt")
    front = read_model_config(tmp_path / "tagger" / "config.pbtxt")
    assert scores.backend == "onnxruntime"
    assert front.parameters["scores_model"].string_value == "tagger_onnx"
