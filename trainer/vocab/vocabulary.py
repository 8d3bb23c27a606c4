"""The model's vocabulary: the ordered tags it predicts and the user-tag forms that map onto them.

A vocabulary is one file, ``vocab.json`` (``{"version", "tags": [...], "aliases": {form: tag}, ...}``),
that the trainer reads to turn user tags into targets and that ships inside each exported model version.
"""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

_PUNCT = re.compile(r"[^\w\s-]+")
_SPACE = re.compile(r"[\s_-]+")


def normalize_tag(raw: str) -> str:
    """Case-, accent-, punctuation- and whitespace-insensitive form of a tag (``"Coucher-de Soleil!"`` →
    ``"coucher de soleil"``)."""
    text = unicodedata.normalize("NFKD", raw).encode("ascii", "ignore").decode("ascii")
    text = _PUNCT.sub("", text.lower())
    return _SPACE.sub(" ", text).strip()


class VocabularyError(ValueError):
    """A vocabulary file the trainer cannot use; the message names the file and the problem."""


@dataclass
class Vocabulary:
    tags: list[str]
    aliases: dict[str, str] = field(default_factory=dict)
    version: str = "1"
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.index = {t: i for i, t in enumerate(self.tags)}
        self._lookup = {normalize_tag(t): t for t in self.tags}
        self._lookup.update({normalize_tag(a): t for a, t in self.aliases.items()})

    def canonical(self, raw: str) -> str | None:
        """The vocabulary tag a user tag means, or None if it means none of them."""
        key = normalize_tag(raw)
        hit = self._lookup.get(key)
        if hit is None and key.endswith("s"):
            hit = self._lookup.get(key[:-1])  # plural
        return hit

    def encode(self, user_tags: list[str]) -> np.ndarray:
        """Multi-hot float32 target over ``tags`` for a photo's user tags."""
        target = np.zeros(len(self.tags), dtype=np.float32)
        for raw in user_tags:
            tag = self.canonical(raw)
            if tag is not None:
                target[self.index[tag]] = 1.0
        return target

    def to_dict(self) -> dict:
        return {**self.extra, "version": self.version, "tags": self.tags, "aliases": self.aliases}

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_dict(), indent=1, ensure_ascii=False) + "\n")

    @classmethod
    def load(cls, path: Path) -> Vocabulary:
        """Read a ``vocab.json``; VocabularyError naming the file and the problem for anything else."""
        path = Path(path)
        try:
            data = json.loads(path.read_bytes())
        except FileNotFoundError:
            raise VocabularyError(f"vocabulary {path} not found") from None
        except OSError as exc:
            raise VocabularyError(f"vocabulary {path}: {exc.strerror or exc}") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise VocabularyError(f"vocabulary {path} is not JSON ({exc})") from None
        if not isinstance(data, dict) or "tags" not in data:
            raise VocabularyError(
                f"{path} is not a vocabulary: expected an object with a 'tags' list (made by darkroom vocab)"
            )
        tags, aliases = data["tags"], data.get("aliases", {})
        if not isinstance(tags, list) or not all(isinstance(t, str) and t.strip() for t in tags):
            raise VocabularyError(f"vocabulary {path}: 'tags' must be a list of non-empty strings")
        if not tags:
            raise VocabularyError(
                f"vocabulary {path} keeps no tags: nothing to train (rerun darkroom vocab with lower thresholds)"
            )
        duplicates = sorted({t for t in tags if tags.count(t) > 1})
        if duplicates:
            raise VocabularyError(f"vocabulary {path}: tag(s) listed twice: {', '.join(duplicates[:10])}")
        if not isinstance(aliases, dict) or not all(
            isinstance(a, str) and isinstance(t, str) and t in tags for a, t in aliases.items()
        ):
            raise VocabularyError(f"vocabulary {path}: 'aliases' must map strings to tags of the vocabulary")
        extra = {k: v for k, v in data.items() if k not in ("version", "tags", "aliases")}
        return cls(tags=list(tags), aliases=dict(aliases), version=str(data.get("version", "1")), extra=extra)


def synthetic_vocabulary() -> Vocabulary:
    """The synthetic world's concepts with their known synonyms: the skeleton's vocabulary, before
    ``darkroom vocab`` derives one from search demand and user tags."""
    from trainer.data.scenes import CONCEPTS
    from trainer.data.synthetic import SYNONYMS

    aliases = {form: concept for concept, forms in SYNONYMS.items() for form in forms}
    return Vocabulary(tags=list(CONCEPTS), aliases=aliases, version="synthetic-1")
