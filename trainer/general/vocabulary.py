"""The general tagger's vocabulary: ImageNet-1k classes mapped to photo-search tags by reviewable data files.

* ``imagenet_classes.tsv``: the 1,000 ILSVRC-2012 classes in the networks' output order (WordNet id, name).
* ``tags.tsv``: one row per tag: stable id, parents (a tag implies its parents: tabby cat → cat → mammal, pet),
  threshold (the score a photo needs for the tag).
* ``class_tags.tsv``: one row per class: the most specific tags it shows; parents are added from ``tags.tsv``.

A tag's score is the summed softmax probability of every class under it, so "dog" collects all 118 breeds and
a photo whose probability is spread across breeds still gets "dog". Errors name the file, line and fix.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

DATA = Path(__file__).parent
NUM_CLASSES = 1000


@dataclass(frozen=True)
class Tag:
    name: str
    id: str
    parents: tuple[str, ...]
    threshold: float


@dataclass(frozen=True)
class GeneralVocabulary:
    """Tags in output order, their ids and thresholds, and the class → tag matrix (closure over parents)."""

    classes: list[tuple[str, str]]  # (WordNet id, name) per network output
    tags: list[Tag]
    class_tags: np.ndarray  # float32 [classes, tags]: 1 where the class implies the tag

    @property
    def names(self) -> list[str]:
        return [t.name for t in self.tags]

    def to_dict(self) -> dict:
        """The checkpoint's and version folder's ``vocab``: tags in output order and their stable ids."""
        return {"version": "general-1", "tags": self.names, "aliases": {}, "ids": [t.id for t in self.tags]}

    def class_tag_names(self, wnid: str) -> list[str]:
        """Every tag a class implies, in vocabulary order."""
        row = [w for w, _ in self.classes].index(wnid)
        return [self.tags[j].name for j in np.flatnonzero(self.class_tags[row])]


def _rows(path: Path, header: str) -> list[tuple[int, list[str]]]:
    """(line number, fields) of a TSV file after its comment lines and the expected header."""
    if not path.is_file():
        raise ValueError(f"vocabulary file {path} not found")
    lines = [(n, line) for n, line in enumerate(path.read_text().splitlines(), 1) if not line.startswith("#")]
    if not lines or lines[0][1] != header:
        raise ValueError(f"{path}: the first line after the comments must be the header {header!r}")
    width = header.count("\t") + 1
    rows = []
    for n, line in lines[1:]:
        fields = line.split("\t")
        if len(fields) != width:
            raise ValueError(
                f"{path}:{n}: expected {width} tab-separated fields, got {len(fields)}: {line!r:.80}"
            )
        rows.append((n, fields))
    return rows


def _split(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def load_classes(path: Path) -> list[tuple[str, str]]:
    """The ImageNet classes in output order; ValueError unless there are exactly 1,000 distinct WordNet ids."""
    classes = [(w, name) for _, (w, name) in _rows(path, "wnid\tname")]
    if len(classes) != NUM_CLASSES or len({w for w, _ in classes}) != NUM_CLASSES:
        raise ValueError(f"{path}: expected {NUM_CLASSES} distinct classes, got {len(classes)}")
    return classes


def load_tags(path: Path) -> dict[str, Tag]:
    """Every tag by name; ValueError naming the line of a duplicate, a bad threshold or an unknown parent."""
    tags: dict[str, Tag] = {}
    lines: dict[str, int] = {}
    for n, (name, tag_id, parents, threshold) in _rows(path, "tag\tid\tparents\tthreshold"):
        if not name or name in tags:
            raise ValueError(f"{path}:{n}: tag {name!r} is empty or listed twice")
        try:
            value = float(threshold)
        except ValueError:
            value = -1.0
        if not 0 < value <= 1:
            raise ValueError(
                f"{path}:{n}: threshold of {name!r} must be a number in (0, 1], got {threshold!r}"
            )
        if not tag_id:
            raise ValueError(f"{path}:{n}: tag {name!r} needs a stable id (a WordNet id or darkroom:{name})")
        tags[name] = Tag(name, tag_id, tuple(_split(parents)), value)
        lines[name] = n
    for tag in tags.values():
        unknown = [p for p in tag.parents if p not in tags]
        if unknown:
            raise ValueError(
                f"{path}:{lines[tag.name]}: {tag.name!r} has unknown parent(s) {unknown}; add them"
            )
    for name in tags:
        _ancestors(name, tags, path, ())
    return tags


def _ancestors(name: str, tags: dict[str, Tag], path: Path, seen: tuple[str, ...]) -> set[str]:
    if name in seen:
        raise ValueError(f"{path}: tag parents form a cycle: {' → '.join([*seen, name])}")
    out: set[str] = set()
    for parent in tags[name].parents:
        out |= {parent} | _ancestors(parent, tags, path, (*seen, name))
    return out


def load(directory: Path = DATA) -> GeneralVocabulary:
    """Read the three data files of ``directory`` and check they agree (class order, known tags, no orphans)."""
    classes = load_classes(directory / "imagenet_classes.tsv")
    tags = load_tags(directory / "tags.tsv")
    mapping_path = directory / "class_tags.tsv"
    mapping = _rows(mapping_path, "wnid\tclass\ttags")
    if [fields[0] for _, fields in mapping] != [w for w, _ in classes]:
        raise ValueError(
            f"{mapping_path}: rows must list the {NUM_CLASSES} classes of imagenet_classes.tsv, in order"
        )
    order = sorted(tags)
    column = {name: j for j, name in enumerate(order)}
    matrix = np.zeros((NUM_CLASSES, len(order)), dtype=np.float32)
    for row, (n, (_, _, names)) in enumerate(mapping):
        for name in _split(names):
            if name not in tags:
                raise ValueError(f"{mapping_path}:{n}: unknown tag {name!r}; add it to tags.tsv")
            for implied in {name} | _ancestors(name, tags, mapping_path, ()):
                matrix[row, column[implied]] = 1.0
    orphans = [order[j] for j in np.flatnonzero(matrix.sum(axis=0) == 0)]
    if orphans:
        raise ValueError(f"{directory / 'tags.tsv'}: no class maps to {orphans}; map a class or remove them")
    return GeneralVocabulary(classes, [tags[name] for name in order], matrix)
