"""`darkroom bench --quick` keeps working end to end (CI runs only this; no timing is asserted)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tools.bench.cli import SUMMARY_KEYS

pytestmark = pytest.mark.e2e


def test_quick_bench_writes_every_result(synthetic_model, tmp_path):
    argv = [sys.executable, "-m", "tools.cli", "bench", "--quick", "--photos", "60",
            "--checkpoint", str(synthetic_model / "checkpoint" / "checkpoint.pt"),
            "--workdir", str(tmp_path / "work"), "--run-dir", str(tmp_path / "run"), "--out", str(tmp_path / "out")]  # fmt: skip
    result = subprocess.run(argv, capture_output=True, text=True, timeout=400)
    assert result.returncode == 0, result.stderr[-3000:]
    printed = json.loads(result.stdout.strip().splitlines()[-1])
    saved = json.loads((tmp_path / "out" / "latest.json").read_text())
    assert set(printed) == set(SUMMARY_KEYS) and {"machine", "decode", "offline", "stream", "naive"} <= set(
        saved
    )
    assert all(printed[key] == saved[key] for key in SUMMARY_KEYS)
    assert saved["photos"] == 60 and saved["stream"]["dead_letters"] == 0
    for key in ("offline_img_s", "stream_img_s", "naive_img_s"):
        assert saved[key] > 0
    assert saved["ratio_stream_offline"] == round(saved["stream_img_s"] / saved["offline_img_s"], 3)
    assert set(saved["latency_ms"]) == {"p50", "p95", "p99"}
    cpu = saved["stream"]["cpu_ms_per_photo"]  # where the streaming CPU went, process by process
    assert all(cpu[part] > 0 for part in ("broker", "triton", "worker", "bench client"))
    assert cpu["total"] >= cpu["worker"] + cpu["triton"] and saved["offline"]["cpu_ms_per_photo"] > 0
    assert (tmp_path / "out" / "latest.md").read_text().startswith("# Darkroom benchmark")
    assert (tmp_path / "out" / "latest.png").stat().st_size > 1000


def test_bad_option_is_a_clear_error(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "tools.cli", "bench", "--photos", "5"], capture_output=True, text=True
    )
    assert result.returncode == 2 and "--photos" in result.stderr and "Traceback" not in result.stderr
