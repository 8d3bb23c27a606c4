"""Skipped offsets (stream/gaps.py): the decision, and the two readers that act on it — librdkafka's
(``GapHealingReader``: the indexer, `darkroom tail`, the bench's reader) and aiokafka's in the worker's
consumer thread (``heal_fetched``). The race itself, on the real embedded broker: bench/offset_gaps.py."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, KafkaException, TopicPartition

from stream import metrics
from stream.app import heal_fetched
from stream.clients import GapHealingReader
from stream.gaps import OffsetGaps


def test_dense_offsets_are_all_delivered():
    gaps = OffsetGaps(retries=3)
    assert gaps.check("p", 10, [10, 11, 12]) == 3
    assert gaps.check("p", 13, []) == 0
    assert gaps.healed == gaps.accepted == 0 and gaps.pending("p") is None


def test_a_skipped_offset_is_fetched_again_and_counts_as_healed_when_it_comes():
    gaps = OffsetGaps(retries=3)
    assert gaps.check("p", 10, [10, 11, 13, 14]) == 2  # 12 is missing: deliver 10, 11; fetch again from 12
    assert gaps.pending("p") == 12
    assert gaps.check("p", 12, [12, 13, 14]) == 3  # the broker has stored it by now
    assert gaps.healed == 1 and gaps.accepted == 0 and gaps.pending("p") is None


def test_a_gap_at_the_fetch_offset_itself_keeps_nothing():
    gaps = OffsetGaps(retries=2)
    assert gaps.check("p", 5, [7, 8]) == 0 and gaps.pending("p") == 5


def test_a_gap_that_stays_is_read_past_after_the_retries():
    gaps = OffsetGaps(retries=2)
    assert gaps.check("p", 0, [0, 2]) == 1  # 1 is missing: fetch again
    assert gaps.check("p", 1, [2]) == 0  # again
    assert gaps.check("p", 1, [2, 3]) == 2  # fetched again twice, still not there: read past it (a marker)
    assert gaps.accepted == 1 and gaps.healed == 0 and gaps.pending("p") is None
    assert gaps.check("p", 4, [4, 6]) == 1 and gaps.pending("p") == 5  # a new gap gets its own retries


def test_partitions_are_independent_and_retries_zero_turns_the_check_off():
    gaps = OffsetGaps(retries=1)
    assert gaps.check("a", 0, [1]) == 0 and gaps.check("b", 0, [0, 1]) == 2
    assert gaps.pending("a") == 0 and gaps.pending("b") is None
    off = OffsetGaps(retries=0)
    assert off.check("a", 0, [5, 9]) == 2 and off.pending("a") is None
    assert OffsetGaps(retries=3).check("a", None, [5, 9]) == 2  # position unknown: nothing to compare


# -- librdkafka ---------------------------------------------------------------------------------------------
@dataclass
class Msg:
    t: str
    p: int
    o: int
    err: object = None

    def topic(self) -> str:
        return self.t

    def partition(self) -> int:
        return self.p

    def offset(self) -> int:
        return self.o

    def error(self) -> object:
        return self.err


class FakeConsumer:
    def __init__(self, low: int | None = 0, seek_fails: bool = False) -> None:
        self.low, self.seek_fails, self.seeks = low, seek_fails, []

    def get_watermark_offsets(self, tp, timeout):  # noqa: ANN001
        if self.low is None:
            raise KafkaException("Local: Timed out")
        return self.low, 100

    def seek(self, tp: TopicPartition) -> None:
        if self.seek_fails:
            raise KafkaException("Local: Erroneous state")
        self.seeks.append((tp.topic, tp.partition, tp.offset))


def test_the_librdkafka_reader_drops_what_follows_a_gap_and_seeks_back_to_it():
    consumer = FakeConsumer(low=3)
    reader = GapHealingReader(consumer, OffsetGaps(retries=3))
    reader.started([TopicPartition("tags", 0, OFFSET_BEGINNING), TopicPartition("tags", 1, 7)])
    error = Msg("tags", 0, -1, err="EOF")
    batch = [
        Msg("tags", 0, 3),
        Msg("tags", 1, 7),
        error,
        Msg("tags", 0, 5),
        Msg("tags", 1, 8),
        Msg("tags", 0, 6),
    ]
    out = reader.admit(batch)
    assert [(m.topic(), m.partition(), m.offset()) for m in out if not m.error()] == [
        ("tags", 0, 3), ("tags", 1, 7), ("tags", 1, 8)
    ]  # fmt: skip
    assert error in out  # errors pass through to the caller, which decides about them
    assert consumer.seeks == [("tags", 0, 4)]
    # the fetch from 4 now has it: all delivered, in order, and counted as healed
    out = reader.admit([Msg("tags", 0, 4), Msg("tags", 0, 5), Msg("tags", 0, 6)])
    assert [m.offset() for m in out] == [4, 5, 6] and reader.gaps.healed == 1


def test_the_end_is_learnt_from_the_first_record_and_a_failed_seek_reads_on():
    consumer = FakeConsumer(seek_fails=True)
    reader = GapHealingReader(consumer, OffsetGaps(retries=3))
    reader.started([TopicPartition("tags", 0, OFFSET_END)])
    assert [m.offset() for m in reader.admit([Msg("tags", 0, 40)])] == [40]
    assert [m.offset() for m in reader.admit([Msg("tags", 0, 42)])] == [42]  # cannot seek: as before
    assert reader.gaps.pending(("tags", 0)) is None


# -- aiokafka, in the worker's consumer thread --------------------------------------------------------------
@dataclass
class Record:
    offset: int


class FakeAioConsumer:
    def __init__(self) -> None:
        self.seeks = []

    def seek(self, tp, offset) -> None:  # noqa: ANN001
        self.seeks.append((tp, offset))


def _count(outcome: str) -> float:
    return metrics.FETCH_GAPS.labels(outcome)._value.get()


@pytest.mark.parametrize("retries", [1, 3])
def test_the_worker_leaves_records_past_a_gap_unread_and_fetches_the_partition_again(retries):
    consumer, gaps = FakeAioConsumer(), OffsetGaps(retries)
    healed = _count("healed")
    fetched = {"uploads-0": [Record(20), Record(22)], "uploads-1": [Record(5), Record(6)]}
    out = heal_fetched(consumer, gaps, {"uploads-0": 20, "uploads-1": 5}, fetched)
    assert {tp: [r.offset for r in rs] for tp, rs in out.items()} == {"uploads-0": [20], "uploads-1": [5, 6]}
    assert consumer.seeks == [("uploads-0", 21)]
    out = heal_fetched(consumer, gaps, {"uploads-0": 21}, {"uploads-0": [Record(21), Record(22)]})
    assert [r.offset for r in out["uploads-0"]] == [21, 22] and _count("healed") == healed + 1
    # a partition cut to nothing is left out of what Faust gets
    out = heal_fetched(consumer, gaps, {"uploads-1": 7}, {"uploads-1": [Record(9)]})
    assert out == {} and consumer.seeks[-1] == ("uploads-1", 7)


class _State:
    def __init__(self, position: int | None) -> None:
        self.has_valid_position = position is not None
        self.position = position


class _Assignment:
    def __init__(self, states: dict) -> None:
        self.tps, self._states = set(states), states

    def state_value(self, tp):  # noqa: ANN001
        return self._states.get(tp)


class _Consumer:
    def __init__(self, states: dict) -> None:
        self.reassign(states)

    def reassign(self, states: dict) -> None:
        subscription = type("Subscription", (), {"assignment": _Assignment(states)})()
        self._subscription = type("SubscriptionState", (), {"subscription": subscription})()


def test_after_a_rebalance_positions_from_before_it_are_not_compared():
    from stream.app import fetch_positions, unchanged_positions

    kept, moved = _State(10), _State(4)
    consumer = _Consumer({"uploads-0": kept, "uploads-1": moved, "uploads-2": _State(None)})
    before = fetch_positions(consumer)
    assert {tp: pos for tp, (_, pos) in before.items()} == {"uploads-0": 10, "uploads-1": 4}
    assert unchanged_positions(consumer, before) == {"uploads-0": 10, "uploads-1": 4}
    # a rebalance while the fetch waited: uploads-1 now starts where the group committed (another worker
    # read on from 4 to 30); seeking it back to 4 would redo that work, so it is not checked this time
    consumer.reassign({"uploads-0": kept, "uploads-1": _State(30)})
    assert unchanged_positions(consumer, before) == {"uploads-0": 10}
    consumer._subscription.subscription = None  # no assignment at all (stopped)
    assert fetch_positions(consumer) == {} and unchanged_positions(consumer, before) == {}


def test_a_broker_that_gives_no_watermarks_leaves_the_start_to_the_first_record():
    reader = GapHealingReader(FakeConsumer(low=None), OffsetGaps(retries=3))
    reader.started([TopicPartition("tags", 0, OFFSET_BEGINNING)])
    assert [m.offset() for m in reader.admit([Msg("tags", 0, 9), Msg("tags", 0, 10)])] == [9, 10]
