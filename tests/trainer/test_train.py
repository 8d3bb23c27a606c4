"""Training: the loss tolerates missing tags, resume continues exactly, fine-tuning starts from a backbone,
and DDP under torchrun (2 CPU processes on gloo) trains and writes one checkpoint."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.trainer.test_data_manifest import _collection
from trainer.checkpoint import load_tagger
from trainer.train import TrainConfig, array_batches, asymmetric_loss, build_tagger, fit, make_checkpoint
from trainer.vocab.vocabulary import synthetic_vocabulary

ROOT = Path(__file__).resolve().parents[2]


def _grad_of_negative(loss_fn, p: float) -> float:
    logit = torch.tensor([[float(np.log(p / (1 - p)))]], requires_grad=True)
    loss_fn(logit, torch.zeros(1, 1)).backward()
    return float(logit.grad)


def test_asymmetric_loss_ignores_easy_negatives_and_damps_likely_missing_tags():
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    assert _grad_of_negative(asymmetric_loss, 0.04) == 0.0  # under the margin: no push at all
    assert _grad_of_negative(bce, 0.04) > 0
    # BCE pushes a confident "negative" (likely a tag the user forgot) hardest; ASL far less
    assert _grad_of_negative(asymmetric_loss, 0.97) < 0.5 * _grad_of_negative(bce, 0.97)
    pos = torch.tensor([[2.0]], requires_grad=True)
    asymmetric_loss(pos, torch.ones(1, 1)).backward()
    assert float(pos.grad) < 0  # positives are still learned


def _tiny(n: int = 48, size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (n, size, size, 3), dtype=np.uint8)
    targets = (rng.random((n, 15)) < 0.3).astype(np.float32)
    images[targets[:, 0] > 0, :8] = 255  # something learnable
    return images, targets


def _train(
    config: TrainConfig, state: Path, resume: bool = False, until: int | None = None
) -> torch.nn.Module:
    images, targets = _tiny()
    torch.manual_seed(0)
    model = build_tagger(config, 15)
    fit(
        model,
        lambda e, g: array_batches(images, targets, config.batch_size, g),
        3,
        config,
        state,
        resume,
        until,
    )
    return model


def test_resume_continues_exactly_where_training_stopped(tmp_path):
    config = TrainConfig(size=32, epochs=3, batch_size=16, threads=1)
    straight = _train(config, tmp_path / "a.pt")
    _train(config, tmp_path / "b.pt", until=1)
    assert torch.load(tmp_path / "b.pt", weights_only=False)["epoch"] == 1
    resumed = _train(config, tmp_path / "b.pt", resume=True)
    for (name, a), b in zip(
        straight.net.state_dict().items(), resumed.net.state_dict().values(), strict=True
    ):
        assert torch.allclose(a.float(), b.float(), atol=1e-6), name
    with pytest.raises(ValueError, match="other options"):
        _train(TrainConfig(size=32, epochs=4, batch_size=16, threads=1), tmp_path / "b.pt", resume=True)


def test_fine_tuning_starts_from_the_backbone_with_a_new_head(tmp_path):
    config = TrainConfig(size=32, epochs=1, batch_size=16, threads=1)
    source = _train(config, tmp_path / "s.pt")
    path = tmp_path / "pre.pt"
    torch.save(make_checkpoint(source, config, synthetic_vocabulary(), [0.5] * 15, {}, []), path)
    tuned = build_tagger(TrainConfig(size=32, init_from=str(path)), 15, [f"other{i}" for i in range(15)])
    for key, value in source.net.state_dict().items():
        same = torch.equal(value, tuned.net.state_dict()[key])
        assert same != key.startswith("head."), key  # another label space: backbone kept, head new
    same_vocab = build_tagger(TrainConfig(size=32, init_from=str(path)), 15, synthetic_vocabulary().tags)
    for key, value in source.net.state_dict().items():  # the same vocabulary: the head is kept too
        assert torch.equal(value, same_vocab.net.state_dict()[key]), key
    with pytest.raises(ValueError, match="holds a 'mobilenet_lite_050', not a 'resnet_ref'"):
        build_tagger(TrainConfig(model="resnet_ref", init_from=str(path)), 15)


def test_ddp_with_torchrun_on_two_cpu_processes(tmp_path):
    manifest = _collection(tmp_path / "photos", n=32)
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "trainer.train",
           "--train", str(manifest), "--val", str(manifest), "--out", str(out),
           "--set", "epochs=1", "--set", "size=32", "--set", "batch_size=8", "--set", "threads=1"]  # fmt: skip
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    ckpt = torch.load(out / "checkpoint.pt", weights_only=False)
    assert ckpt["metrics"]["world_size"] == 2 and len(ckpt["metrics"]["losses"]) == 1
    assert len(ckpt["skipped"]) == 6  # the bad files, from training and validation
    tagger = load_tagger(ckpt)
    assert tagger(torch.zeros(1, 32, 32, 3, dtype=torch.uint8)).shape == (1, 15)
