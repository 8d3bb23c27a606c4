"""From what people type to the tags it means: ``"Boats at the SEA!"`` → ``("boat", "sea")``.

One normalizer serves both inputs of the vocabulary step, search queries and user tags, so that a query
and a tag that mean the same thing land on the same candidate. In order, for each text:

1. fold case, accents, punctuation and whitespace (non-Latin letters are kept);
2. match known multi-word forms first, longest first (``coucher de soleil`` → sunset);
3. drop query function words (``at``, ``the``, ``de`` ...);
4. map each remaining word through the synonym/translation file, then strip a plural and try again.

Stop tags (cameras, years, ``me``) are *not* removed here: they stay candidates so the report can show the
search demand they carry, and ``is_stop`` rejects them when the vocabulary is chosen.
"""

from __future__ import annotations

import re
import string
import unicodedata
from functools import lru_cache
from pathlib import Path

DATA_DIR = Path(__file__).parent / "data"
DEFAULT_SYNONYMS = DATA_DIR / "synonyms.tsv"
DEFAULT_STOP_TAGS = DATA_DIR / "stop_tags.tsv"
DEFAULT_QUERY_WORDS = DATA_DIR / "query_words.tsv"

_ASCII_FOLD = str.maketrans({c: " " for c in string.punctuation.replace("'", "")} | {"'": None})
_NON_WORD = re.compile(r"[\W_]+")
_APOSTROPHES = re.compile(r"['\u2019\u02bc]")
_CACHE_SIZE = 1 << 14


class DataFileError(ValueError):
    """A synonym, stop-tag or query-word file that cannot be used as it is."""


def fold(text: str) -> str:
    """Lower-case, accent-free, punctuation-free, single-spaced form of ``text``."""
    if text.isascii():
        return " ".join(text.lower().translate(_ASCII_FOLD).split())
    decomposed = unicodedata.normalize("NFKD", _APOSTROPHES.sub("", text))
    bare = "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()
    return " ".join(_NON_WORD.sub(" ", bare).split())


def singular(word: str) -> str:
    """English plural stripped by a few suffix rules (``skies`` → ``sky``, ``beaches`` → ``beach``).

    Deliberately small: words it would break go into the synonym file as identity lines."""
    if len(word) <= 3 or not word.endswith("s") or word.endswith(("ss", "us", "is")):
        return word
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith(("sses", "ches", "shes", "xes", "zzes")):
        return word[:-2]
    return word[:-1]


def _data_lines(path: Path) -> list[tuple[int, str]]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataFileError(f"cannot read {path}: {exc}") from None
    return [
        (n, line.strip())
        for n, line in enumerate(text.splitlines(), 1)
        if line.strip() and not line.lstrip().startswith("#")
    ]


class TagNormalizer:
    """Maps free text (a query or a user tag) to the canonical tags it contains."""

    def __init__(
        self, synonyms: dict[str, str], stop_tags: set[str], stop_patterns: list[str], query_words: set[str]
    ):
        self.query_words = {fold(w) for w in query_words}
        self.synonyms: dict[str, str] = {}
        self.phrases: dict[tuple[str, ...], str] = {}
        for form, tag in synonyms.items():
            key, value = fold(form), fold(tag)
            if not key or not value:
                continue
            self.synonyms[key] = value
            if " " in key:
                self.phrases[tuple(key.split())] = value
        self.max_phrase = max((len(p) for p in self.phrases), default=1)
        self.stop_tags = {self.word_tag(fold(t)) for t in stop_tags}
        self._stop_re = re.compile("|".join(f"(?:{p})" for p in stop_patterns)) if stop_patterns else None
        self.tags_in = lru_cache(maxsize=_CACHE_SIZE)(self.tags_of)
        self.is_stop = lru_cache(maxsize=_CACHE_SIZE)(self._is_stop)

    @classmethod
    def from_files(
        cls, synonyms: Path | None = None, stop_tags: Path | None = None, query_words: Path | None = None
    ) -> TagNormalizer:
        """A normalizer from the editable data files (the packaged ones where a path is None)."""
        synonyms_path = synonyms or DEFAULT_SYNONYMS
        table: dict[str, str] = {}
        for n, line in _data_lines(synonyms_path):
            parts = [p.strip() for p in line.split("\t")]
            if len(parts) != 2 or not all(parts):
                raise DataFileError(f"{synonyms_path}:{n}: expected 'form<TAB>tag', got {line!r}")
            table[parts[0]] = parts[1]
        words, patterns = set(), []
        stop_path = stop_tags or DEFAULT_STOP_TAGS
        for n, line in _data_lines(stop_path):
            if line.startswith("re:"):
                try:
                    re.compile(line[3:])
                except re.error as exc:
                    raise DataFileError(
                        f"{stop_path}:{n}: bad regular expression {line[3:]!r}: {exc}"
                    ) from None
                patterns.append(line[3:])
            else:
                words.add(line)
        function_words = {line for _, line in _data_lines(query_words or DEFAULT_QUERY_WORDS)}
        return cls(table, words, patterns, function_words)

    def word_tag(self, word: str) -> str:
        """Canonical tag of one folded word: synonym, else singular's synonym, else singular."""
        hit = self.synonyms.get(word)
        if hit is not None:
            return hit
        one = singular(word)
        return self.synonyms.get(one, one)

    def tags_of(self, text: str) -> tuple[str, ...]:
        """Sorted distinct canonical tags in ``text``. ``tags_in`` is the same, cached (inputs repeat
        the same tags and queries); readers with their own cache call this one."""
        words = fold(text).split()
        tags: set[str] = set()
        i, n = 0, len(words)
        while i < n:
            for span in range(min(self.max_phrase, n - i), 1, -1):
                hit = self.phrases.get(tuple(words[i : i + span]))
                if hit is not None:
                    tags.add(hit)
                    i += span
                    break
            else:
                word = words[i]
                if (len(word) > 1 or not word.isascii()) and word not in self.query_words:
                    tags.add(self.word_tag(word))
                i += 1
        return tuple(sorted(tags))

    def _is_stop(self, tag: str) -> bool:
        return tag in self.stop_tags or (
            self._stop_re is not None and self._stop_re.fullmatch(tag) is not None
        )

    def forms_of(self, tag: str) -> list[str]:
        """The synonym-file forms that mean ``tag``."""
        return sorted(form for form, canonical in self.synonyms.items() if canonical == tag and form != tag)
