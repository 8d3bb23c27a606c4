"""``darkroom vocab``: the vocabulary chosen from search demand, tag usage and visualness."""

from __future__ import annotations

import contextlib
import io
import json
import re
from pathlib import Path

import pytest

from trainer.data.querylog import (
    SEARCHED_NON_VISUAL,
    SEARCHED_STOP,
    UNPHOTOGRAPHED,
    make_synthetic_world,
    write_query_log,
)
from trainer.data.scenes import CONCEPTS
from trainer.data.synthetic import SYNONYMS
from trainer.vocab import cli
from trainer.vocab.counting import DistinctCount, HeavyHitters, stable_hash
from trainer.vocab.inputs import InputError, read_manifest, read_query_log
from trainer.vocab.normalize import TagNormalizer, singular
from trainer.vocab.report import write_vocab_report
from trainer.vocab.selection import Criteria, build_vocabulary
from trainer.vocab.vocabulary import Vocabulary


@pytest.fixture(scope="module")
def normalizer() -> TagNormalizer:
    return TagNormalizer.from_files()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A small synthetic world: 1500 photos (small JPEGs) with noisy user tags, and a query log."""
    return make_synthetic_world(
        tmp_path_factory.mktemp("world"), photos=1500, query_lines=5000, seed=0, size=(96, 72)
    )


@pytest.fixture(scope="module")
def run(world: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> dict:
    """``darkroom vocab`` on the world once: exit status, printed output, vocab.json and report."""
    queries, manifest = world
    out = tmp_path_factory.mktemp("out")
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        code = cli.main(
            ["--queries", str(queries), "--manifest", str(manifest), "--out", str(out / "vocab.json"),
             "--report", str(out / "report.md"), "--truth"]
        )  # fmt: skip
    return {
        "code": code,
        "stdout": buffer.getvalue(),
        "vocab": out / "vocab.json",
        "report": out / "report.md",
    }


# --- normalization -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "tags"),
    [
        ("Boats at the SEA!", ("boat", "sea")),
        ("  beach,   SUNSET ", ("beach", "sunset")),
        ("Coucher-de-Soleil sur la plage", ("beach", "sunset", "sur")),
        ("skies", ("sky",)),
        ("Beaches", ("beach",)),
        ("houses", ("house",)),
        ("Océan", ("sea",)),
        ("meer", ("sea",)),
        ("gras", ("grass",)),  # a translation that looks plural is not stripped
        ("grass", ("grass",)),
        ("iPhone 2016", ("2016", "iphone")),
    ],
)
def test_queries_map_to_the_canonical_tags_they_contain(
    normalizer: TagNormalizer, text: str, tags: tuple
) -> None:
    assert normalizer.tags_in(text) == tags


def test_stop_tags_cover_cameras_years_and_self_references(normalizer: TagNormalizer) -> None:
    assert all(normalizer.is_stop(t) for t in ("iphone", "nikon", "canon", "2016", "me", "50mm"))
    assert not any(normalizer.is_stop(t) for t in ("sea", "love", "travel"))


def test_singular_leaves_words_that_only_look_plural() -> None:
    assert [singular(w) for w in ("boats", "skies", "beaches", "glass", "bus", "gras")] == [
        "boat", "sky", "beach", "glass", "bus", "gra"
    ]  # fmt: skip


# --- the synthetic world, end to end -------------------------------------------------------------------


def test_synthetic_world_recovers_the_visual_concepts(run: dict) -> None:
    assert run["code"] == 0
    tags = set(json.loads(run["vocab"].read_text())["tags"])
    recall = len(tags & set(CONCEPTS)) / len(CONCEPTS)
    precision = len(tags & set(CONCEPTS)) / max(len(tags), 1)
    assert recall >= 0.95, sorted(set(CONCEPTS) - tags)
    assert precision >= 0.9, sorted(tags - set(CONCEPTS))


def test_non_visual_unphotographed_and_stop_tags_are_dropped_with_reasons(
    run: dict, normalizer: TagNormalizer
) -> None:
    reasons = {c["tag"]: c["reason"] for c in json.loads(run["vocab"].read_text())["candidates"]}
    expected = [
        (SEARCHED_NON_VISUAL, "not visual"),
        (UNPHOTOGRAPHED, "in 0 photos"),
        (SEARCHED_STOP, "stop tag"),
    ]
    for queries, reason in expected:
        for tag in (t for q in queries for t in normalizer.tags_in(q)):
            assert reasons[tag].startswith(reason), (tag, reasons[tag])


def test_synonyms_and_translations_merge_into_one_tag(run: dict) -> None:
    vocab = Vocabulary.load(run["vocab"])
    assert not {"ocean", "mer", "meer", "skies", "nuit"} & set(vocab.tags)
    assert [vocab.canonical(f) for f in ("ocean", "Mer", "meer", "sea")] == ["sea"] * 4
    forms = [(form, concept) for concept, fs in SYNONYMS.items() if concept in vocab.tags for form in fs]
    assert [f for f, c in forms if vocab.canonical(f) != c] == []


def test_vocab_json_is_what_the_trainer_loads(run: dict) -> None:
    vocab = Vocabulary.load(run["vocab"])
    data = json.loads(run["vocab"].read_text())
    assert vocab.version.startswith("vocab-") and vocab.extra["candidates"]
    target = vocab.encode(["Ocean", "coucher de soleil", "iphone"])
    assert {vocab.tags[i] for i in target.nonzero()[0]} == {"sea", "sunset"}
    assert set(data["stats"]) == set(data["tags"])
    assert all(c["reason"] for c in data["candidates"])
    assert 0.0 < data["coverage"]["all"] <= data["coverage"]["any"] <= 1.0


def test_command_prints_truth_figures_and_search_coverage(run: dict) -> None:
    out = run["stdout"]
    figures = re.search(r"recall ([\d.]+)\s+precision ([\d.]+)", out)
    assert figures, out
    assert float(figures.group(1)) >= 0.95 and float(figures.group(2)) >= 0.9
    assert re.search(r"search-volume coverage: [\d.]+%", out)


def test_markdown_report_lists_kept_dropped_and_coverage(run: dict) -> None:
    text = run["report"].read_text()
    assert "## Kept tags" in text and "## Top dropped candidates" in text
    assert "Search volume covered:" in text
    assert re.search(r"\| travel \|.*not visual", text)


def test_html_report_says_the_same(
    world: tuple[Path, Path], normalizer: TagNormalizer, tmp_path: Path
) -> None:
    outcome = build_vocabulary(*world, normalizer, Criteria(visual=False))
    write_vocab_report(outcome, tmp_path / "r.html")
    text = (tmp_path / "r.html").read_text()
    assert (
        text.startswith("<!doctype html>")
        and "<h2>Kept tags</h2>" in text
        and "Search volume covered" in text
    )


# --- support: distinct photos and distinct owners ------------------------------------------------------


def _manifest(path: Path, rows: list[tuple[str, list[str]]]) -> Path:
    path.write_text("".join(json.dumps({"path": f"p{i}.jpg", "owner": o, "user_tags": t}) + "\n"
                            for i, (o, t) in enumerate(rows)))  # fmt: skip
    return path


@pytest.mark.parametrize(("owners", "kept"), [(1, False), (30, True)])
def test_one_prolific_owner_cannot_push_a_tag_in(
    tmp_path: Path, normalizer: TagNormalizer, owners: int, kept: bool
) -> None:
    rows = [(f"user{i % owners}", ["kitten"]) for i in range(300)] + [
        (f"other{i}", ["sea"]) for i in range(40)
    ]
    manifest = _manifest(tmp_path / "m.jsonl", rows)
    (tmp_path / "q.tsv").write_text("kitten\t5000\nsea\t100\n")
    outcome = build_vocabulary(tmp_path / "q.tsv", manifest, normalizer, Criteria(visual=False))
    kitten = next(c for c in outcome.candidates if c.tag == "kitten")
    assert (kitten.photos, kitten.owners) == (300, owners)
    assert kitten.kept is kept
    if not kept:
        assert kitten.reason.startswith("used by 1 owners")


# --- bad input ----------------------------------------------------------------------------------------


def test_bad_query_lines_are_counted_with_line_numbers(tmp_path: Path, normalizer: TagNormalizer) -> None:
    log = tmp_path / "q.tsv"
    log.write_bytes(
        b"query\tcount\nsea\t3\nthree\tcolumns\there\nno tab\nsea\tmany\nmer \xff\xfe\t2\n\nsunset\t-1\nsky\t1\n"
    )
    demand = read_query_log(log, normalizer)
    assert demand.queries == 2 and demand.volume == 4
    assert [line for line, _ in demand.bad.examples] == [3, 4, 5, 6, 8]
    reasons = dict(demand.bad.examples)
    assert reasons[3].startswith("wrong column count") and reasons[4].startswith("wrong column count")
    assert reasons[5].startswith("count is not an integer") and reasons[6].startswith("invalid UTF-8")
    assert reasons[8].startswith("negative count")


def test_bad_manifest_lines_are_counted_with_line_numbers(tmp_path: Path, normalizer: TagNormalizer) -> None:
    manifest = tmp_path / "m.jsonl"
    manifest.write_bytes(
        b'{"path": "a.jpg", "owner": "u1", "user_tags": ["sea"]}\n'
        b'{"path": "b.jpg", "owner": "u1", "user_tags": ["sea"\n'
        b'["not", "an", "object"]\n'
        b'{"path": "c.jpg", "user_tags": "sea"}\n'
        b'{"path": "d.jpg", "owner": "u2", "user_tags": ["mer \xff"]}\n'
        b'{"path": "e.jpg", "owner": null, "user_tags": []}\n'
    )
    usage = read_manifest(manifest, normalizer)
    assert usage.photos == 2
    assert [(line, reason.split(":")[0]) for line, reason in usage.bad.examples] == [
        (2, "broken JSON"), (3, "not a JSON object"), (4, "user_tags must be a list of strings"), (5, "invalid UTF-8")
    ]  # fmt: skip


def test_strict_makes_the_first_bad_line_a_clear_error(
    tmp_path: Path, normalizer: TagNormalizer, capsys
) -> None:
    (tmp_path / "q.tsv").write_text("sea\t1\nsea\tlots\n")
    _manifest(tmp_path / "m.jsonl", [("u", ["sea"])])
    with pytest.raises(InputError, match=r"q\.tsv:2: count is not an integer"):
        read_query_log(tmp_path / "q.tsv", normalizer, strict=True)
    args = [
        "--queries",
        str(tmp_path / "q.tsv"),
        "--manifest",
        str(tmp_path / "m.jsonl"),
        "--out",
        str(tmp_path / "v.json"),
    ]
    assert cli.main([*args, "--strict", "--no-visual"]) == 2
    err = capsys.readouterr().err
    assert "q.tsv:2: count is not an integer" in err and "--strict" in err and "Traceback" not in err
    assert cli.main([*args, "--no-visual", "--min-photos", "1", "--min-owners", "1"]) == 0
    assert Vocabulary.load(tmp_path / "v.json").tags == ["sea"]


@pytest.mark.parametrize(
    "problem",
    ["missing queries", "folder as manifest", "bad report suffix", "bad synonyms file", "no inputs"],
)
def test_unusable_inputs_are_one_line_errors_never_tracebacks(tmp_path: Path, capsys, problem: str) -> None:
    (tmp_path / "q.tsv").write_text("sea\t1\n")
    _manifest(tmp_path / "m.jsonl", [("u", ["sea"])])
    (tmp_path / "syn.tsv").write_text("just one column\n")
    base = {
        "--queries": str(tmp_path / "q.tsv"),
        "--manifest": str(tmp_path / "m.jsonl"),
        "--out": str(tmp_path / "v.json"),
    }
    change = {
        "missing queries": {"--queries": str(tmp_path / "nope.tsv")},
        "folder as manifest": {"--manifest": str(tmp_path)},
        "bad report suffix": {"--report": str(tmp_path / "r.pdf")},
        "bad synonyms file": {"--synonyms": str(tmp_path / "syn.tsv")},
        "no inputs": {"--queries": None, "--manifest": None},
    }[problem]
    args = [x for k, v in {**base, **change}.items() if v is not None for x in (k, v)]
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.strip()


# --- bounded counting ---------------------------------------------------------------------------------


def test_distinct_count_is_exact_when_small_and_close_when_large() -> None:
    small, large = DistinctCount(k=256), DistinctCount(k=1024)
    for i in range(200):
        small.add(stable_hash(f"owner{i % 100}"))
    for i in range(50_000):
        large.add(stable_hash(f"owner{i}"))
    assert len(small) == 100
    assert abs(len(large) - 50_000) / 50_000 < 0.1


def test_heavy_hitters_stay_bounded_and_count_the_heavy_keys_exactly() -> None:
    hh = HeavyHitters(capacity=100)
    for i in range(10_000):
        hh.counts["heavy"] = hh.counts.get("heavy", 0) + 5
        hh.counts[f"tail{i}"] = 1
        if i % 50 == 0:
            hh.prune()
    hh.prune()
    assert len(hh.counts) <= 100 and hh.counts["heavy"] == 50_000 and hh.evicted_keys > 0


def test_query_log_reader_memory_is_bounded_by_its_capacity(
    tmp_path: Path, normalizer: TagNormalizer
) -> None:
    log = write_query_log(tmp_path / "q.tsv", 150_000, seed=3, long_tail=0.5)
    demand = read_query_log(log, normalizer, capacity=5_000)
    assert demand.lines == 150_001 and demand.bad.total == 0
    assert len(demand.tagsets.counts) <= 5_000 and demand.tagsets.evicted_keys > 0
    assert demand.per_tag().most_common(1)[0][0] == "sunset"  # the heaviest concept survives eviction exactly


def test_unreadable_images_leave_visualness_unmeasured_not_guessed(
    tmp_path: Path, normalizer: TagNormalizer
) -> None:
    manifest = _manifest(tmp_path / "m.jsonl", [(f"user{i}", ["sea"]) for i in range(60)])  # no such JPEGs
    (tmp_path / "q.tsv").write_text("sea\t10\n")
    outcome = build_vocabulary(tmp_path / "q.tsv", manifest, normalizer, Criteria())
    assert outcome.vocabulary.tags == []
    assert outcome.candidates[0].reason.startswith("visualness not measured: only 0 of 60")
    assert outcome.probe is not None and outcome.probe.unreadable_total == 60


def test_synthetic_flag_generates_a_world_and_reports_truth(tmp_path: Path, capsys) -> None:
    args = [
        "--synthetic",
        str(tmp_path),
        "--photos",
        "200",
        "--query-lines",
        "500",
        "--no-visual",
        "--k",
        "5",
    ]
    assert cli.main([*args, "--report", str(tmp_path / "r.html")]) == 0
    out = capsys.readouterr().out
    assert re.search(r"recall [\d.]+\s+precision [\d.]+", out), out
    assert len(Vocabulary.load(tmp_path / "vocab.json").tags) == 5 and (tmp_path / "r.html").exists()
    assert (tmp_path / "queries.tsv").exists() and (tmp_path / "photos" / "manifest.jsonl").exists()
