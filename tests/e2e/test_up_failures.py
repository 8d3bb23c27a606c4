"""`darkroom up` fails clearly: the child that broke is named with its log file, and nothing is left running."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tools.embedded import Ports

pytestmark = pytest.mark.e2e


def run_up(repo: Path, run_dir: Path, ports: Ports) -> subprocess.CompletedProcess:
    argv = [sys.executable, "-m", "tools.cli", "up", "--model-repo", str(repo), "--run-dir", str(run_dir),
            "--kafka-port", str(ports.kafka), "--triton-http-port", str(ports.triton_http),
            "--triton-grpc-port", str(ports.triton_grpc), "--triton-metrics-port", str(ports.triton_metrics),
            "--worker-port", str(ports.worker_web), "--web-port", str(ports.web)]  # fmt: skip
    return subprocess.run(argv, capture_output=True, text=True, timeout=120)


def our_children_alive(run_dir: Path) -> list[int]:
    """Processes still running whose command line mentions this test's run folder or ports."""
    alive = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if str(run_dir) in cmd and int(entry.name) != os.getpid():
                alive.append(int(entry.name))
    return alive


def test_broken_model_names_triton_and_its_log_and_stops_the_broker(tmp_path):
    repo = tmp_path / "triton_models"
    (repo / "tagger" / "1").mkdir(parents=True)
    (repo / "tagger" / "config.pbtxt").write_text('name: "tagger"\nbackend: "python"\nmax_batch_size: 4\n')
    (repo / "tagger" / "1" / "model.py").write_text("raise RuntimeError('this model cannot load')\n")
    result = run_up(repo, tmp_path / "run", Ports.free())
    assert result.returncode == 1
    error = result.stderr + result.stdout
    assert "triton" in error and str(tmp_path / "run" / "triton.log") in error.replace("\n", "")
    assert not our_children_alive(tmp_path / "run")


def test_port_in_use_is_named_before_anything_starts(tmp_path, model_repo):
    ports = Ports.free()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", ports.triton_grpc))
        busy.listen()
        result = run_up(model_repo, tmp_path / "run", ports)
    assert result.returncode == 1
    assert f"port {ports.triton_grpc}" in result.stderr and "--triton-grpc-port" in result.stderr
    assert not (tmp_path / "run" / "broker.log").exists()


def test_missing_model_repository_is_a_clear_error(tmp_path):
    result = run_up(tmp_path / "nowhere", tmp_path / "run", Ports.free())
    assert result.returncode == 2 and "no model" in result.stderr
    assert not json.dumps(result.stderr).count("Traceback")


def test_more_workers_than_partitions_is_a_clear_error(tmp_path, model_repo):
    argv = [sys.executable, "-m", "tools.cli", "up", "--model-repo", str(model_repo), "--run-dir",
            str(tmp_path / "run"), "--workers", "9"]  # fmt: skip
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert (
        result.returncode == 2 and "--workers must be 1..4" in result.stderr and "partitions" in result.stderr
    )
    assert "Traceback" not in result.stderr and not (tmp_path / "run" / "broker.log").exists()
