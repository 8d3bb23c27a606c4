"""Offsets that skip: a reader that is shown a later record before an earlier one goes back for it.

Within a partition Kafka's offsets are dense, and a broker never serves a record past one it has not stored.
The embedded broker breaks that: Tansu 0.6's memory storage raises a partition's high watermark *before* it
stores the batch (``dynostore.rs``, ``produce``: the watermark, then ``put_opts``) and a fetch returns the
stored batches at or after the fetch offset that lie below that watermark. With two producers writing one
partition (two workers writing ``photo-tags``), a fetch that lands between the two steps of one of them gets
the other's later batch, and the reader moves past the earlier one for good. Seen: a tailing reader skipped
1 of 13,447 records written by two producers, and in ``bench/offset_gaps.py``'s runs readers without this
check lost 0 to 3 of ~30,000; the records are all in the topic when read again later (docs/reliability.md).
For the worker this is an upload never tagged, for the indexer a photo never searchable.

:class:`OffsetGaps` is the reader's side of the fix: records are checked against the offset each partition
was fetched from; at the first one that skips, the caller delivers what came before it and fetches again from
the skipped offset (a seek). A gap that is still there after ``retries`` fetches is real (a transaction's
commit marker, a compacted topic) and is read past; ``retries=0`` turns the check off. A real Kafka cluster
never shows the race, so there it costs only a comparison per record.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field

log = logging.getLogger(__name__)


@dataclass
class OffsetGaps:
    """Per partition: where the next record should be, and how often a gap there was fetched again.

    ``healed`` counts gaps that closed when fetched again (records the reader would have lost), ``accepted``
    gaps that stayed (read past, as Kafka means them: nothing there)."""

    retries: int = 3
    healed: int = 0
    accepted: int = 0
    _tries: dict[Hashable, tuple[int, int]] = field(default_factory=dict)  # partition -> (gap offset, tries)

    def check(self, partition: Hashable, position: int | None, offsets: Sequence[int]) -> int:
        """How many of ``offsets`` (one fetch's records of ``partition``, ascending, fetched from
        ``position``; None: unknown) to deliver. Fewer than all: the rest start past a gap, so the caller drops
        them and fetches again from :meth:`pending` (the skipped offset)."""
        if position is None or self.retries <= 0:
            return len(offsets)
        expected = position
        for kept, offset in enumerate(offsets):
            if offset <= expected:  # the next record (or one below: the client skips those itself)
                expected = max(expected, offset + 1)
                self._closed(partition, offset)
                continue
            gap, tries = self._tries.get(partition, (expected, 0))
            if gap != expected:
                tries = 0
            if tries < self.retries:
                self._tries[partition] = (expected, tries + 1)
                return kept
            self.accepted += 1
            self._tries.pop(partition, None)
            log.warning(
                "offsets %d to %d of %s are still not there fetched again %d time(s): read past them", expected, offset - 1,
                partition, tries,
            )  # fmt: skip
            expected = offset + 1
        return len(offsets)

    def _closed(self, partition: Hashable, offset: int) -> None:
        gap = self._tries.get(partition)
        if gap is not None and offset >= gap[0]:
            del self._tries[partition]
            if offset == gap[0]:
                self.healed += 1
                log.info("offset %d of %s was served late and is read now (fetched again %d time(s))", offset,
                         partition, gap[1])  # fmt: skip

    def pending(self, partition: Hashable) -> int | None:
        """The offset of a gap in ``partition`` being fetched again (None: none)."""
        gap = self._tries.get(partition)
        return None if gap is None else gap[0]

    def forget(self, partition: Hashable) -> None:
        """The partition was reassigned or sought elsewhere: its gap, if any, is no longer ours to heal."""
        self._tries.pop(partition, None)
