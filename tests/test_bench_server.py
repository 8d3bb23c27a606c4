"""The server scenario's search (tools/bench/server.py) against a stand-in stack whose p99 is known: it must
find the highest passing rate to within its resolution, count a stack that falls behind as failing, and
report only a rate it actually tried. (The real stack runs in tests/e2e/test_bench_quick.py.)"""

from __future__ import annotations

import pytest

from tools.bench.server import CURVE_LOADS, Trial, latency_curve, server_search

CEILING = 400.0


class StandIn:
    """``offer(rate)``: p99 under the bound up to ``knee`` (a fraction of the ceiling), far over it above;
    ``behind``: from that load on, the stack keeps up with only half of what is offered."""

    def __init__(self, knee: float, behind: float = 9.0) -> None:
        self.knee, self.behind = knee, behind
        self.min_photos = 40
        self.offered: list[float] = []

    def offer(self, rate: float, photos: int | None = None) -> Trial:
        self.offered.append(rate)
        load = rate / CEILING
        p99 = 90.0 if load <= self.knee else 900.0
        achieved = rate if load < self.behind else rate / 2
        return Trial(rate, rate, achieved, photos or 100, p99 / 3, p99 / 2, p99, 0)


@pytest.mark.parametrize("knee", [0.3, 0.55, 0.7, 0.8])
def test_the_search_finds_the_knee_within_its_resolution(knee):
    stand_in = StandIn(knee)
    curve = latency_curve(stand_in, CEILING)  # type: ignore[arg-type]
    assert [c["load"] for c in curve] == list(CURVE_LOADS)
    found = server_search(stand_in, CEILING, 150.0, curve, top=0.95, steps=3)  # type: ignore[arg-type]
    assert knee - 0.25 / 2**3 - 1e-9 <= found["server_offline_ratio"] <= knee
    assert abs(found["img_s"] - found["server_offline_ratio"] * CEILING) <= 0.001 * CEILING
    tried = {round(r / CEILING, 3) for r in stand_in.offered}
    assert found["server_offline_ratio"] in tried
    assert found["first_failing_ratio"] is not None and found["first_failing_ratio"] > knee


def test_when_every_curve_point_passes_the_burst_rate_is_tried():
    stand_in = StandIn(knee=1.0)
    curve = latency_curve(stand_in, CEILING)  # type: ignore[arg-type]
    found = server_search(stand_in, CEILING, 150.0, curve, top=0.97, steps=3)  # type: ignore[arg-type]
    assert found["server_offline_ratio"] == 0.97 and found["first_failing_ratio"] is None


def test_a_stack_that_falls_behind_fails_even_with_a_low_p99():
    stand_in = StandIn(knee=1.0, behind=0.6)  # p99 always within the bound, but a queue from 60 % on
    curve = latency_curve(stand_in, CEILING)  # type: ignore[arg-type]
    found = server_search(stand_in, CEILING, 150.0, curve, top=0.97, steps=4)  # type: ignore[arg-type]
    assert 0.5 <= found["server_offline_ratio"] < 0.6


def test_nothing_passes_gives_zero():
    stand_in = StandIn(knee=0.1)
    curve = latency_curve(stand_in, CEILING)  # type: ignore[arg-type]
    found = server_search(stand_in, CEILING, 150.0, curve, top=0.97, steps=3)  # type: ignore[arg-type]
    assert found["server_offline_ratio"] <= 0.1 and found["server_offline_ratio"] >= 0.0


class Flaky(StandIn):
    """Passes up to ``knee`` on a first offer of a rate, but a repeat of any rate above ``steady`` fails."""

    def __init__(self, knee: float, steady: float) -> None:
        super().__init__(knee)
        self.steady = steady

    def offer(self, rate: float, photos: int | None = None) -> Trial:
        trial = super().offer(rate, photos)
        again = any(abs(rate - before) < 0.002 * CEILING for before in self.offered[:-1])
        if again and rate / CEILING > self.steady:
            return Trial(rate, rate, rate, trial.photos, 300.0, 450.0, 900.0, 0)
        return trial


def test_a_rate_that_fails_its_confirmation_is_not_reported():
    stand_in = Flaky(knee=0.6, steady=0.5)  # 0.5 < rates <= 0.6 pass once, then fail when offered again
    curve = latency_curve(stand_in, CEILING)  # type: ignore[arg-type]
    found = server_search(stand_in, CEILING, 150.0, curve, top=0.95, steps=3, confirm=True)  # type: ignore[arg-type]
    assert found["confirmed"] is True and found["server_offline_ratio"] == 0.5  # the curve's 50 % point
    confirms = [t for t in found["trials"] if t.get("confirm")]
    assert [t["p99"] > 150 for t in confirms] == [True, True, False]  # 0.594 and 0.562 failed their repeat
    assert found["first_failing_ratio"] is not None and found["first_failing_ratio"] > 0.5


def test_a_confirmed_rate_is_reported():
    stand_in = Flaky(knee=0.6, steady=1.0)
    curve = latency_curve(stand_in, CEILING)  # type: ignore[arg-type]
    found = server_search(stand_in, CEILING, 150.0, curve, top=0.95, steps=3, confirm=True)  # type: ignore[arg-type]
    assert found["confirmed"] is True and 0.5 < found["server_offline_ratio"] <= 0.6
    assert abs(stand_in.offered[-1] - found["server_offline_ratio"] * CEILING) < 0.001 * CEILING


def test_server_trials_move_to_a_fresh_stack_before_one_takes_too_many_uploads(monkeypatch):
    """The embedded broker slows as its topics grow: no stack takes more than ``fresh_after`` uploads, and a
    trial on a fresh stack is preceded by an unreported warm-up (its first uploads look up partition leaders)."""
    import contextlib

    from tools.bench import streaming
    from tools.bench.server import Server

    started, stopped = [], []

    class FakeLoad:
        def __init__(self, bootstrap):
            self.bootstrap = bootstrap

        def close(self):
            stopped.append(self.bootstrap)

    @contextlib.contextmanager
    def start(index):
        started.append(index)
        yield type("S", (), {"bootstrap": f"stack{index}"})(), None, object()

    monkeypatch.setattr(streaming, "LoadGenerator", FakeLoad)
    runs: list[tuple[str, int]] = []
    with streaming.FreshStacks(start, fresh_after=1000) as stacks:
        server = Server(stacks, [], duration_s=1.0, min_photos=40)
        server._trial = lambda rate, n: runs.append((stacks.load.bootstrap, n))  # type: ignore[method-assign]
        for rate in (300, 800, 200, 100):
            server.offer(rate)
    assert started == [0, 1, 2] and stopped == ["stack0", "stack1", "stack2"]
    # 300 (+ its warm-up allowance) fits the first stack; 800 more would pass 1000: a fresh stack, warmed up
    assert runs == [("stack0", 300), ("stack1", 10), ("stack1", 800), ("stack2", 10), ("stack2", 200),
                    ("stack2", 100)]  # fmt: skip
