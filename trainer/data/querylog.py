"""The synthetic world's search-query log: what people type into the search box, and how often.

Demand is known by construction: every visual concept is searched (in names, plurals, synonyms,
translations, multi-word queries, mixed case and punctuation), and so are tags that a model cannot see
(``love``, ``travel``), things never photographed in this world (``cat``, ``wedding``), stop tags
(``iphone``, ``2016``) and spam. A vocabulary step that works keeps the concepts and drops the rest.

Lines are ``query<TAB>count`` (a count of searches, as in an aggregated daily log), written in a stream,
so the same generator makes the small log of a synthetic world and the multi-million-line benchmark log.
"""

from __future__ import annotations

import random
import string
from pathlib import Path

import numpy as np

from trainer.data.scenes import CONCEPTS
from trainer.data.synthetic import SYNONYMS, make_photo_set

#: Relative search demand for each visual concept.
CONCEPT_DEMAND: dict[str, float] = {
    "sunset": 10, "beach": 9, "sea": 8, "flower": 6, "sky": 6, "night": 5, "snow": 5, "moon": 4,
    "car": 4, "boat": 4, "tree": 4, "house": 3, "sun": 3, "cloud": 3, "grass": 2,
}  # fmt: skip
#: Searched and tagged, but nothing a model can see: visualness must drop them.
SEARCHED_NON_VISUAL: dict[str, float] = {
    "travel": 7, "love": 6, "summer": 6, "vacation": 5, "family": 5, "holiday": 4, "friends": 3, "happy": 2, "fun": 2,
}  # fmt: skip
#: Searched but never photographed in this world: no support in the manifest.
UNPHOTOGRAPHED: dict[str, float] = {
    "cat": 6, "dog": 6, "wedding": 4, "food": 4, "portrait": 3, "mountain": 3, "paris": 2, "new york": 2,
}  # fmt: skip
#: Searched camera makes, years and self-references: stop tags.
SEARCHED_STOP: dict[str, float] = {"iphone": 3, "nikon": 2, "canon": 2, "2016": 2, "2017": 1, "me": 1}
#: Searched spam words that a few spammers put on every photo.
SEARCHED_SPAM: dict[str, float] = {"free": 2, "sale": 1}

#: Concepts seen together, for multi-word queries.
_PAIRS = (
    ("beach", "sunset"), ("boat", "sea"), ("sunset", "sea"), ("moon", "night"), ("tree", "snow"),
    ("flower", "grass"), ("house", "snow"), ("car", "beach"), ("cloud", "sky"), ("sun", "beach"),
)  # fmt: skip
_PAIR_TEMPLATES = ("{a} {b}", "{A} at {b}", "{A} on the {b}", "{a} and {b}", "{b} {a}")
_NON_VISUAL_TEMPLATES = ("{a} {n}", "{n} {a}", "{a} {y}")


def plural(word: str) -> str:
    """English plural of a concept name (``beach`` → ``beaches``, ``sky`` → ``skies``)."""
    if word.endswith(("s", "x", "ch", "sh")):
        return word + "es"
    if word.endswith("y") and word[-2] not in "aeiou":
        return word[:-1] + "ies"
    return word + "s"


def query_pool() -> list[tuple[str, float]]:
    """Distinct clean queries of the synthetic world with their relative demand."""
    pool: list[tuple[str, float]] = []
    for concept, weight in CONCEPT_DEMAND.items():
        pool += [
            (concept, weight),
            (plural(concept), 0.3 * weight),
            (f"photos of {plural(concept)}", 0.05 * weight),
        ]
        pool += [(form, 0.4 * weight / len(SYNONYMS[concept])) for form in SYNONYMS[concept]]
    for a, b in _PAIRS:
        w = 0.2 * min(CONCEPT_DEMAND[a], CONCEPT_DEMAND[b])
        pool += [(t.format(a=a, b=b, A=plural(a)), w / len(_PAIR_TEMPLATES)) for t in _PAIR_TEMPLATES]
    for i, (concept, weight) in enumerate(CONCEPT_DEMAND.items()):
        nv = list(SEARCHED_NON_VISUAL)[i % len(SEARCHED_NON_VISUAL)]
        pool += [(t.format(a=concept, n=nv, y=2016 + i % 3), 0.05 * weight) for t in _NON_VISUAL_TEMPLATES]
    for table in (SEARCHED_NON_VISUAL, UNPHOTOGRAPHED, SEARCHED_STOP, SEARCHED_SPAM):
        pool += [(q, w) for q, w in table.items()]
    pool += [("coucher de soleil sur la plage", 0.5), ("puesta de sol", 0.4), ("iphone photos", 0.5)]
    return pool


def _surface(query: str, roll: float) -> str:
    """A query as a person types it: mostly as is, sometimes shouted, capitalized, hashed or punctuated."""
    if roll < 0.10:
        return query.title()
    if roll < 0.13:
        return query.upper()
    if roll < 0.16:
        return query + "!"
    if roll < 0.19:
        return query + "?" if " " in query else "#" + query
    if roll < 0.21:
        return f"  {query}  ,"
    return query


def _junk(rng: random.Random) -> str:
    """A long-tail query nobody else types (the distinct-query count keeps growing with the log)."""
    words = (
        "".join(rng.choices(string.ascii_lowercase, k=rng.randint(3, 9))) for _ in range(rng.randint(1, 3))
    )
    return " ".join(words)


def write_query_log(
    path: Path, n_lines: int, seed: int = 0, long_tail: float = 0.02, chunk: int = 65_536
) -> Path:
    """Write ``n_lines`` lines ``query<TAB>count`` drawn from ``query_pool``, streamed in chunks.

    ``long_tail`` is the share of lines with a never-repeated junk query."""
    pool = query_pool()
    queries = [q for q, _ in pool]
    weights = np.array([w for _, w in pool], dtype=np.float64)
    np_rng = np.random.default_rng(seed)
    rng = random.Random(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="\n") as fh:
        fh.write("query\tcount\n")
        for start in range(0, n_lines, chunk):
            size = min(chunk, n_lines - start)
            picks = np_rng.choice(len(queries), size=size, p=weights / weights.sum())
            counts = np_rng.geometric(0.3, size=size)
            rolls = np_rng.random(size)
            tails = np_rng.random(size) < long_tail
            lines = [
                f"{_junk(rng) if tail else _surface(queries[i], r)}\t{c}\n"
                for i, c, r, tail in zip(
                    picks.tolist(), counts.tolist(), rolls.tolist(), tails.tolist(), strict=True
                )
            ]
            fh.writelines(lines)
    return path


def make_synthetic_world(
    out_dir: Path,
    photos: int = 1500,
    query_lines: int = 20_000,
    seed: int = 0,
    size: tuple[int, int] = (96, 72),
) -> tuple[Path, Path]:
    """Photos with noisy user tags plus a query log, in ``out_dir``; returns (query log, manifest)."""
    manifest = make_photo_set(out_dir / "photos", photos, seed=seed, size=size)
    queries = write_query_log(out_dir / "queries.tsv", query_lines, seed=seed)
    return queries, manifest


def truth() -> set[str]:
    """The tags a vocabulary of the synthetic world should hold: exactly the visual concepts."""
    return set(CONCEPTS)
