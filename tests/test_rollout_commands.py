"""`darkroom compare`'s numbers, `promote`'s gates and the rollout state in the model config, without a stack
(tests/e2e/test_shadow.py runs them on the real one)."""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pytest

from contracts.rollout import Rollout
from tools import rollout
from tools.rollout import Gates, check_gates, compare, parse_tag_event


def event(
    pid: str, version: str, tags: list[str], tagged_at: str = "2026-12-01T00:00:01Z", **kw: object
) -> bytes:
    return orjson.dumps(
        {"photo_id": pid, "model_version": version, "model": "tagger", "uploaded_at": "2026-12-01T00:00:00Z",
         "tagged_at": tagged_at, "tags": [{"tag": t, "score": 0.9} for t in tags], **kw}
    )  # fmt: skip


def test_compare_counts_rates_and_jaccard_on_the_photos_both_versions_tagged() -> None:
    live = [
        event("a", "1", ["dog", "sky"]),
        event("b", "1", ["sky"]),
        event("c", "1", []),
        event("d", "1", ["x"]),
    ]
    shadow = [
        event("a", "2", ["dog"], shadow=True),
        event("b", "2", ["sky", "tree"], shadow=True),
        event("c", "2", [], shadow=True),
        event("z", "2", ["dog"], shadow=True),  # no live event: not compared
        event("a", "3", ["cat"], shadow=True),  # another version: ignored
    ]
    c = compare([*live, b"not json", b"[]"], shadow, "1", "2")
    assert (c.live_photos, c.expected_shadow, c.compared, c.skipped) == (4, 4, 3, 2)
    assert c.agreement == pytest.approx((1 / 2 + 1 / 2 + 1) / 3)
    assert {t: (s.live, s.shadow, s.both) for t, s in c.tags.items()} == {
        "dog": (1, 1, 1), "sky": (2, 1, 1), "tree": (0, 1, 0)
    }  # fmt: skip
    assert c.rate("sky", "live") == pytest.approx(2 / 3) and c.tags["sky"].agreement == pytest.approx(1 / 2)
    assert c.shadow_missing == pytest.approx(1 / 4)
    assert [d["photo_id"] for d in c.disagreements] == ["a", "b"]  # c agrees; ties by the larger difference
    assert c.disagreements[1]["only_shadow"] == ["tree"]


def test_events_tagged_after_until_need_no_shadow_event_yet() -> None:
    live = [
        event("a", "1", ["dog"], "2026-12-01T00:00:01Z"),
        event("b", "1", ["dog"], "2026-12-01T00:10:00Z"),
    ]
    shadow = [event("a", "2", ["dog"])]
    until = parse_tag_event(live[0]).tagged_at + 60
    c = compare(live, shadow, "1", "2", until=until)
    assert (c.expected_shadow, c.compared, c.shadow_missing) == (1, 1, 0.0)


@pytest.mark.parametrize(
    "value",
    [b"", b"null", b'{"photo_id": 1}', b'{"photo_id": "a", "model_version": "1", "tags": [{"tag": 3}]}',
     b'{"photo_id": "a", "model_version": "1", "tags": [], "tagged_at": "yesterday"}', b"\xff\xfe"],
)  # fmt: skip
def test_values_that_are_not_tag_events_are_skipped(value: bytes) -> None:
    assert parse_tag_event(value) is None


def _stream(n: int, live_tags, shadow_tags) -> tuple[list[bytes], list[bytes]]:
    live = [event(f"p{i}", "1", live_tags(i)) for i in range(n)]
    shadow = [event(f"p{i}", "2", shadow_tags(i)) for i in range(n)]
    return live, shadow


def test_gates_pass_a_candidate_that_tags_like_the_live_version() -> None:
    live, shadow = _stream(200, lambda i: ["sky", "dog"][: i % 3], lambda i: ["sky", "dog"][: i % 3])
    assert all(g.passed for g in check_gates(compare(live, shadow, "1", "2"), Gates()))


def test_the_gate_refuses_a_candidate_that_silences_a_tag() -> None:
    """A model bug drops "dog": every other number is fine, the gate still says no."""
    tags = ["sky", "tree", "beach", "city", "food", "car", "road", "sea", "snow", "dog"]

    def live_tags(i: int) -> list[str]:
        return tags if i % 20 else tags[:-1]

    def shadow_tags(i: int) -> list[str]:
        return tags[:-1]

    c = compare(*_stream(200, live_tags, shadow_tags), "1", "2")
    gates = {g.name: g for g in check_gates(c, Gates())}
    assert c.agreement > 0.9 and gates["agreement (mean Jaccard)"].passed
    assert not gates["no tag silenced"].passed and gates["no tag silenced"].detail == "dog"
    assert [name for name, g in gates.items() if not g.passed] == ["no tag silenced"]


def test_the_gates_refuse_too_few_photos_a_rate_jump_and_missing_shadow_events() -> None:
    live, shadow = _stream(
        150, lambda i: ["sky"] if i % 10 == 0 else [], lambda i: ["sky"] if i % 2 == 0 else []
    )
    gates = check_gates(compare(live, shadow[:140], "1", "2"), Gates(min_photos=200))
    failed = {g.name for g in gates if not g.passed}
    assert failed == {"photos compared", "per-tag rate change", "shadow missing (errors, drops)"}


# -- the rollout state in config.pbtxt ---------------------------------------------------------------------
def _repo(tmp_path: Path, versions: tuple[int, ...] = (1, 2)) -> Path:
    from trainer.export import ServingConfig, _write_config, model_config

    model_dir = tmp_path / "repo" / "tagger"
    model_dir.mkdir(parents=True)
    for v in versions:
        (model_dir / str(v)).mkdir()
    _write_config(model_dir, model_config("tagger", "cpu", (64, 64), ServingConfig()))
    return model_dir


def test_write_rollout_names_the_versions_and_loads_exactly_those(tmp_path: Path) -> None:
    from trainer.export import read_model_config

    model_dir = _repo(tmp_path, (1, 2, 3))
    assert rollout.read_rollout(model_dir) == Rollout()
    rollout.write_rollout(model_dir, Rollout(live="2", shadow="3", previous="1"))
    config = read_model_config(model_dir / "config.pbtxt")
    assert list(config.version_policy.specific.versions) == [1, 2, 3]
    assert config.parameters["intra_op_threads"].string_value  # the rest of the config is kept
    assert rollout.read_rollout(model_dir) == Rollout("2", "3", "1")
    with pytest.raises(ValueError, match="shadow version 7 is not in"):
        rollout.write_rollout(model_dir, Rollout(live="2", shadow="7"))
    assert rollout.read_rollout(model_dir) == Rollout("2", "3", "1")  # unchanged by the refusal


def test_exporting_under_rollout_control_adds_a_candidate_instead_of_a_live_version(tmp_path: Path) -> None:
    from trainer.export import ServingConfig, model_config, read_model_config
    from trainer.rollout import keep_rollout

    model_dir = _repo(tmp_path)
    fresh = model_config("tagger", "cpu", (64, 64), ServingConfig())
    assert keep_rollout(model_dir, fresh) == fresh  # not under rollout control: export as before
    rollout.write_rollout(model_dir, Rollout(live="1"))
    kept = keep_rollout(model_dir, fresh)
    (model_dir / "config.pbtxt").write_text(kept)
    config = read_model_config(model_dir / "config.pbtxt")
    assert list(config.version_policy.specific.versions) == [1]
    assert rollout.read_rollout(model_dir) == Rollout(live="1")


def test_commands_refuse_bad_input_with_one_line_and_exit_2(tmp_path: Path, capsys) -> None:
    model_dir = _repo(tmp_path)
    repo = ["--repo", str(model_dir.parent), "--log", str(tmp_path / "log.jsonl")]
    assert rollout.rollback_main(repo) == 2  # nothing to roll back to
    assert rollout.promote_main(["2", *repo, "--bootstrap", "127.0.0.1:1"]) == 2  # not under rollout control
    assert rollout.shadow_main(["9", *repo]) == 2  # no such version
    assert rollout.compare_main(["--repo", str(tmp_path / "nowhere")]) == 2
    (model_dir / "config.pbtxt").write_text('name: "tagger"\nparameters { key: "darkroom_live_version" '
                                            'value { string_value: "v1" } }\n')  # fmt: skip
    assert rollout.shadow_main(["2", *repo]) == 2
    lines = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert len(lines) == 5 and all(line.startswith("error:") for line in lines), lines
    assert not (tmp_path / "log.jsonl").exists()


def test_shadow_then_rollback_are_logged_with_the_state_before_and_after(tmp_path: Path) -> None:
    model_dir = _repo(tmp_path, (1, 2))
    log = tmp_path / "log.jsonl"
    repo = ["--repo", str(model_dir.parent), "--log", str(log)]
    assert rollout.shadow_main(["2", *repo]) == 0
    assert rollout.read_rollout(model_dir) == Rollout("1", "2", "")
    rollout.write_rollout(model_dir, Rollout("2", "", "1"))  # as a promotion leaves it
    assert rollout.rollback_main([*repo, "--reason", "dog silenced"]) == 0
    assert rollout.read_rollout(model_dir) == Rollout("1", "", "2")
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["action"] for r in records] == ["shadow", "rollback"]
    assert (
        records[1]["was"] == {"live": "2", "shadow": "", "previous": "1"}
        and records[1]["reason"] == "dog silenced"
    )


def test_the_html_report_shows_thumbnails_only_of_photos_under_the_file_roots(tmp_path: Path) -> None:
    from PIL import Image

    inside, outside = tmp_path / "photos", tmp_path / "elsewhere"
    inside.mkdir()
    outside.mkdir()
    for folder in (inside, outside):
        Image.new("RGB", (64, 48), "red").save(folder / "p.jpg")
    live = [
        event("a", "1", ["dog"], url=(inside / "p.jpg").as_uri()),
        event("b", "1", ["dog"], url=(outside / "p.jpg").as_uri()),
        event("c", "1", ["dog"], url="http://169.254.169.254/latest/<script>"),
    ]
    shadow = [event(pid, "2", ["cat"]) for pid in "abc"]
    c = compare(live, shadow, "1", "2")
    out = tmp_path / "report.html"
    rollout.write_html(c, out, [inside])
    text = out.read_text()
    assert text.count("data:image/jpeg;base64,") == 1
    assert "<script>" not in text and "&lt;script&gt;" in text
    assert "only v1: dog" in text and "only v2: cat" in text
