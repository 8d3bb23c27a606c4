"""Choosing the vocabulary: every candidate tag is scored, gated and ranked, and keeps its reason.

A candidate is any tag that a query or a user tag names, after normalization. In order, it is dropped as a
stop tag; if it is searched too little; if too few distinct photos or distinct *owners* use it (counting
owners, one prolific uploader cannot push a tag in); if it is not visual (see ``visualness``). The rest are
ranked by ``score = sqrt(search share × owner share)`` (the paper's two signals: what users look for and
what they write), and the top K are the vocabulary.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from trainer.vocab.inputs import SearchDemand, TagUsage, read_manifest, read_query_log
from trainer.vocab.normalize import TagNormalizer
from trainer.vocab.visualness import Probe, Visualness, measure_visualness
from trainer.vocab.vocabulary import Vocabulary, normalize_tag

FORMAT = 1
MIN_PROBE_IMAGES = 50  # fewer readable images than this and visualness is not measured at all
#: ``stage(name, total)`` returns the callback a reader reports its progress to.
StageProgress = Callable[[str, int], Callable[[int], None]]


@dataclass(frozen=True)
class Criteria:
    """What it takes to be in the vocabulary (each a CLI flag)."""

    k: int = 100
    min_searches: int = 1
    min_photos: int = 20
    min_owners: int = 10
    min_gain: float = 0.05  # visualness: held-out (AP - chance AP) / (1 - chance AP)
    min_z: float = 4.0  # visualness: held-out (AUC - 0.5) / its standard error
    min_positives: int = 8  # sampled photos with the tag needed to measure visualness
    probe_photos: int = 1500
    visual: bool = True  # measure visualness at all
    seed: int = 0


@dataclass
class Candidate:
    """One candidate tag, its evidence, and the verdict."""

    tag: str
    searches: int
    photos: int
    owners: int
    stop: bool
    visual: Visualness | None = None
    score: float = 0.0
    kept: bool = False
    reason: str = ""

    def to_dict(self) -> dict:
        row = {k: getattr(self, k) for k in ("tag", "kept", "reason", "searches", "photos", "owners")}
        row["score"] = round(self.score, 6)
        if self.visual is not None:
            row["visual"] = self.visual.to_dict()
        return row


@dataclass
class Outcome:
    """Everything ``darkroom vocab`` learned: the vocabulary and the evidence behind it."""

    vocabulary: Vocabulary
    candidates: list[Candidate]
    demand: SearchDemand
    usage: TagUsage
    probe: Probe | None
    coverage: dict[str, float]
    criteria: Criteria
    evaluation: dict = field(default_factory=dict)

    @property
    def kept(self) -> list[Candidate]:
        return [c for c in self.candidates if c.kept]


def _support_reason(c: Candidate, crit: Criteria) -> str | None:
    if c.stop:
        return "stop tag"
    if c.searches < crit.min_searches:
        return "never searched" if c.searches == 0 else f"searched {c.searches} times < {crit.min_searches}"
    if c.photos < crit.min_photos:
        return f"in {c.photos} photos < {crit.min_photos}"
    if c.owners < crit.min_owners:
        return f"used by {c.owners} owners < {crit.min_owners} (in {c.photos} photos)"
    return None


def _visual_reason(c: Candidate, crit: Criteria) -> str | None:
    v = c.visual
    if v is None:
        return (
            f"visualness not measurable: fewer than {crit.min_positives} photos with it in the probe sample"
        )
    if not v.is_visual(crit.min_gain, crit.min_z):
        return (
            f"not visual: held-out AP {v.ap:.3f} vs chance {v.chance_ap:.3f}, AUC {v.auc:.3f} "
            f"(gain {v.gain:.3f}, need {crit.min_gain}; z {v.z:.1f}, need {crit.min_z})"
        )
    return None


def collect_candidates(demand: SearchDemand, usage: TagUsage, normalizer: TagNormalizer) -> list[Candidate]:
    """A candidate for every tag seen in either input, with its counts."""
    searches = demand.per_tag()
    tags = set(searches) | set(usage.tag_photos.counts)
    return [
        Candidate(
            tag=t,
            searches=searches.get(t, 0),
            photos=usage.tag_photos.counts.get(t, 0),
            owners=len(usage.tag_owners[t]) if t in usage.tag_owners else 0,
            stop=normalizer.is_stop(t),
        )
        for t in tags
    ]


def choose(
    candidates: list[Candidate],
    demand: SearchDemand,
    usage: TagUsage,
    crit: Criteria,
    progress: StageProgress | None = None,
) -> tuple[list[Candidate], Probe | None]:
    """Gate, probe and rank ``candidates`` in place; returns them kept-first, in rank order, and the probe."""
    total_owners = max(len(usage.owners), 1)
    for c in candidates:
        c.score = math.sqrt(c.searches / max(demand.volume, 1) * c.owners / total_owners)
        c.reason = _support_reason(c, crit) or ""
    supported = [c for c in candidates if not c.reason]
    probe = None
    if crit.visual and supported:
        tick = progress("probing visualness", len(usage.sample)) if progress else None
        probe = measure_visualness(
            usage.sample, [c.tag for c in supported], crit.min_positives, seed=crit.seed, progress=tick
        )
        unmeasured = (
            f"visualness not measured: only {probe.images} of {len(usage.sample)} sampled images could be "
            "read (see the report; --no-visual skips the probe)"
        )
        for c in supported:
            c.visual = probe.visualness.get(c.tag)
            c.reason = unmeasured if probe.images < MIN_PROBE_IMAGES else _visual_reason(c, crit) or ""
    eligible = sorted((c for c in supported if not c.reason), key=lambda c: (-c.score, c.tag))
    for rank, c in enumerate(eligible, 1):
        c.kept = rank <= crit.k
        c.reason = f"rank {rank} of {crit.k}" if c.kept else f"outside top {crit.k} (rank {rank})"
    kept = [c for c in eligible if c.kept]
    dropped = sorted((c for c in candidates if not c.kept), key=lambda c: (-c.searches, -c.photos, c.tag))
    return kept + dropped, probe


def aliases_for(kept: list[Candidate], usage: TagUsage, normalizer: TagNormalizer) -> dict[str, str]:
    """User-tag forms that mean each kept tag (the synonym file's and the ones users wrote), as the
    trainer's ``Vocabulary.canonical`` will look them up; forms that would clash are left out."""
    tags = {normalize_tag(c.tag): c.tag for c in kept}
    aliases: dict[str, str] = {}
    taken = set(tags)
    for c in kept:
        observed = usage.forms.get(c.tag, {})
        for form in sorted(set(normalizer.forms_of(c.tag)) | set(observed)):
            key = normalize_tag(form)
            if key and key not in taken:
                aliases[form] = c.tag
                taken.add(key)
    return aliases


def version_of(tags: list[str], aliases: dict[str, str]) -> str:
    """A version that names the content: the same tags and aliases always get the same version."""
    digest = hashlib.sha256(json.dumps([tags, aliases], sort_keys=True).encode()).hexdigest()
    return f"vocab-{digest[:12]}"


def build_vocabulary(
    queries: Path,
    manifest: Path,
    normalizer: TagNormalizer,
    crit: Criteria,
    strict: bool = False,
    progress: StageProgress | None = None,
) -> Outcome:
    """Read both inputs, choose the vocabulary, and put the evidence beside it."""
    demand = read_query_log(
        queries, normalizer, strict, progress("reading queries", queries.stat().st_size) if progress else None
    )
    usage = read_manifest(
        manifest,
        normalizer,
        strict,
        progress("reading manifest", manifest.stat().st_size) if progress else None,
        sample_size=crit.probe_photos,
        seed=crit.seed,
    )
    candidates, probe = choose(collect_candidates(demand, usage, normalizer), demand, usage, crit, progress)
    kept = [c for c in candidates if c.kept]
    tags = [c.tag for c in kept]
    aliases = aliases_for(kept, usage, normalizer)
    coverage = demand.coverage(set(tags), normalizer.is_stop)
    extra = {
        "format": FORMAT,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "inputs": {
            "queries": {
                "path": str(queries),
                "lines": demand.lines,
                "queries": demand.queries,
                "volume": demand.volume,
                "bad_lines": demand.bad.to_dict(),
            },
            "manifest": {
                "path": str(manifest),
                "lines": usage.lines,
                "photos": usage.photos,
                "owners": len(usage.owners),
                "bad_lines": usage.bad.to_dict(),
            },
        },  # fmt: skip
        "criteria": asdict(crit),
        "coverage": {k: round(v, 4) for k, v in coverage.items()},
        "stats": {c.tag: {k: v for k, v in c.to_dict().items() if k not in ("tag", "kept")} for c in kept},
        "candidates": [c.to_dict() for c in candidates],
    }
    vocabulary = Vocabulary(tags=tags, aliases=aliases, version=version_of(tags, aliases), extra=extra)
    return Outcome(vocabulary, candidates, demand, usage, probe, coverage, crit)


def evaluate(vocabulary: Vocabulary, truth: set[str], forms: dict[str, Iterable[str]] | None = None) -> dict:
    """Recall and precision of the vocabulary against known true tags, and, given ``{tag: [forms]}``, the
    share of those forms the vocabulary maps to their tag (synonyms and translations merged)."""
    kept = set(vocabulary.tags)
    hits = len(kept & truth)
    result = {
        "recall": hits / max(len(truth), 1),
        "precision": hits / max(len(kept), 1),
        "missed": sorted(truth - kept),
        "extra": sorted(kept - truth),
    }
    if forms is not None:
        pairs = [(form, tag) for tag, fs in forms.items() if tag in kept for form in fs]
        merged = sum(vocabulary.canonical(form) == tag for form, tag in pairs)
        result["merged"] = merged / max(len(pairs), 1)
        result["unmerged"] = sorted(form for form, tag in pairs if vocabulary.canonical(form) != tag)
    return result
