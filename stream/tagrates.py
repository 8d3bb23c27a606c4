"""Per-tag metrics of the live model, for drift alarms (deploy/prometheus/darkroom-drift-rules.yaml).

Each tag event counts its photo (``darkroom_tagged_photos_total``) and each of its tags
(``darkroom_tag_score``: ``_count`` = emissions, ``_sum`` = summed scores), labelled by model version and tag.
A tag's emission rate is its count over the photos' count; its mean score, sum over count.

Cardinality is bounded whatever the model answers: a version has at most ``MAX_TAGS_PER_VERSION`` tag labels
(the served vocabularies have a few hundred tags; past the bound, and for strings that cannot be a vocabulary
tag, the tag counts as ``OTHER``), and only ``MAX_VERSIONS`` versions keep their series (the one being tagged and the newest others).
"""

from __future__ import annotations

import re
import threading

from prometheus_client import Counter, Summary

#: the most tag label values one model version gets (the general tagger's vocabulary has 421 tags)
MAX_TAGS_PER_VERSION = 1000
#: model versions whose series are kept; an older version's series are removed when a newer one appears
MAX_VERSIONS = 3
#: the label of tags past the bound or not shaped like a vocabulary tag
OTHER = "_other"
_TAG = re.compile(r"[\w][\w .&'/+-]{0,63}")
_VERSION = re.compile(r"[1-9][0-9]{0,9}")

TAGGED_PHOTOS = Counter(
    "darkroom_tagged_photos", "Photos tagged by the live model, by model version", ["model_version"]
)
TAG_SCORE = Summary(
    "darkroom_tag_score",
    "Tags emitted by the live model (_count) and their summed scores (_sum), by model version and tag",
    ["model_version", "tag"],
)


class TagRates:
    """The bounded label sets behind the metrics above (one per process)."""

    def __init__(self, max_tags: int = MAX_TAGS_PER_VERSION, max_versions: int = MAX_VERSIONS) -> None:
        self.max_tags = max_tags
        self.max_versions = max_versions
        self.tags: dict[str, set[str]] = {}  # version -> tag labels in use
        self._lock = threading.Lock()

    def observe(self, version: str, tags: list[tuple]) -> None:
        """Count one photo's tags (``(tag, score, ...)`` as the model answered them) under ``version``."""
        if not _VERSION.fullmatch(version):
            return  # the client rejects such answers already; a label must never come from one
        with self._lock:
            known = self.tags.get(version)
            if known is None:
                known = self._add_version(version)
            TAGGED_PHOTOS.labels(version).inc()
            for tag, score, *_ in tags:
                label = self._label(known, tag)
                TAG_SCORE.labels(version, label).observe(min(max(float(score), 0.0), 1.0))

    def _label(self, known: set[str], tag: object) -> str:
        if tag in known:
            return tag  # type: ignore[return-value]
        if not isinstance(tag, str) or not _TAG.fullmatch(tag) or tag == OTHER or len(known) >= self.max_tags:
            return OTHER
        known.add(tag)
        return tag

    def _add_version(self, version: str) -> set[str]:
        """Track ``version``, dropping the series of the oldest others past ``max_versions`` (the version
        being tagged always keeps its series, even when it is older, as after a rollback)."""
        others = sorted(self.tags, key=int)
        for old in others[: max(0, len(others) - self.max_versions + 1)]:
            for tag in [*self.tags.pop(old), OTHER]:
                try:
                    TAG_SCORE.remove(old, tag)
                except KeyError:
                    pass
            try:
                TAGGED_PHOTOS.remove(old)
            except KeyError:
                pass
        self.tags[version] = set()
        return self.tags[version]
