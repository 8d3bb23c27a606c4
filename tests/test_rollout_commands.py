"""`darkroom compare`'s numbers, `promote`'s gates and the rollout state in the model config, without a stack
(tests/e2e/test_shadow.py runs them on the real one)."""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pytest

from contracts.rollout import Rollout
from tools import rollout
from tools.rollout import Comparison, Gates, check_gates, compare, parse_tag_event


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

    from contracts.edits import edit_value
    from tools.edit_agreement import corrections
    from tools.triton_metrics import version_costs

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
    fixes, _ = corrections([edit_value("a", "o", added=["<b>pup</b>"], removed=["dog"])])
    c = compare(live, shadow, "1", "2", edits=fixes)
    c.costs = version_costs(TRITON_METRICS, "tagger", ["1", "2"])
    out = tmp_path / "report.html"
    rollout.write_html(c, out, [inside])
    text = out.read_text()
    assert text.count("data:image/jpeg;base64,") == 1
    assert "<script>" not in text and "&lt;script&gt;" in text
    assert "only v1: dog" in text and "only v2: cat" in text
    assert "owners' edits (1 edited photos)" in text
    assert "<tr><td>v1</td><td>0.000</td><td>0.000</td><td>1/1</td><td>1/1</td></tr>" in text
    assert "<tr><td>v2</td><td>0.500</td><td>0.000</td><td>0/1</td><td>1/1</td></tr>" in text


# -- owners' edits and Triton's per-version costs ----------------------------------------------------------
def test_each_version_is_scored_against_the_owners_corrections() -> None:
    from contracts.edits import edit_value
    from tools.edit_agreement import corrections

    live = [event("a", "1", ["dog", "sky"]), event("b", "1", ["cat"]), event("c", "1", ["sea"])]
    shadow = [event("a", "2", ["sky", "puppy"]), event("b", "2", ["dog"]), event("c", "2", ["sea"])]
    edits = [
        edit_value("a", "ann", added=["puppy"], removed=["dog"], model_version=1),
        edit_value("b", "bob", added=["dog", "Grass"], removed=["cat"], model_version=1),
        edit_value("b", "bob", removed=["grass"], model_version=1),  # a later edit wins the tag
        edit_value("z", "zoe", added=["x"]),  # no compared photo
        b"not an edit",
        b'{"photo_id": "a", "owner": "ann"}',  # no change: skipped as the indexer dead-letters it
    ]
    fixes, skipped = corrections(edits)
    assert skipped == 2 and fixes["b"].added == {"dog"} and fixes["b"].removed == {"cat", "grass"}
    c = compare(live, shadow, "1", "2", edits=fixes)
    assert c.edited == 2  # a and b; c has no edit
    one, two = c.edits["1"], c.edits["2"]
    # live: a emits removed dog (FP), misses puppy (FN); b misses dog (FN), emits removed cat (FP)
    assert (one.added, one.removed, one.false_positives, one.false_negatives) == (2, 3, 2, 2)
    assert one.agreement == pytest.approx(1 / 5) and one.recall == 0.0
    assert (two.false_positives, two.false_negatives, two.agreement, two.recall) == (0, 0, 1.0, 1.0)
    assert c.summary()["edits"]["2"]["agreement"] == 1.0 and c.summary()["edited"] == 2


def _edited(n: int, shadow_tags: list[str]) -> Comparison:
    """Live tags every photo "sky, dog"; owners remove "dog" from every third photo and confirm it (add it)
    on the next one."""
    from contracts.edits import edit_value
    from tools.edit_agreement import corrections

    live, shadow = _stream(n, lambda i: ["sky", "dog"], lambda i: shadow_tags)
    edits = [edit_value(f"p{i}", "o", removed=["dog"]) for i in range(0, n, 3)]
    edits += [edit_value(f"p{i}", "o", added=["dog"]) for i in range(1, n, 3)]
    return compare(live, shadow, "1", "2", edits=corrections(edits)[0])


def test_the_edits_gate_passes_a_shadow_as_good_on_edited_photos_and_skips_too_few() -> None:
    same = _edited(300, ["sky", "dog"])
    assert same.edited == 200 and same.edits["1"].agreement == same.edits["2"].agreement == 0.5
    assert {g.name: g for g in check_gates(same, Gates())}["owners' edits: agreement change"].passed
    traded = _edited(30, ["sky"])  # right where owners removed dog, wrong where they kept it: still 0.5
    assert (traded.edits["2"].agreement, traded.edits["2"].recall, traded.edits["1"].recall) == (
        0.5,
        0.0,
        1.0,
    )
    gate = {g.name: g for g in check_gates(traded, Gates(min_edited=21))}["owners' edits: agreement change"]
    assert gate.passed and gate.detail == "not checked: 20 edited photos < 21"


def test_the_edits_gate_fails_when_the_shadow_undoes_owners_corrections() -> None:
    from contracts.edits import edit_value
    from tools.edit_agreement import corrections

    live, shadow = _stream(100, lambda i: ["sky"], lambda i: ["sky", "dog"])  # the shadow adds "dog" back
    fixes, _ = corrections([edit_value(f"p{i}", "o", removed=["dog"]) for i in range(40)])
    c = compare(live, shadow, "1", "2", edits=fixes)
    gate = {g.name: g for g in check_gates(c, Gates())}["owners' edits: agreement change"]
    assert not gate.passed and gate.value == -1.0 and gate.detail == "40 edited photos"
    assert c.edits["2"].false_positives == 40


TRITON_METRICS = """# HELP nv_inference_request_success Number of successful inference requests
# TYPE nv_inference_request_success counter
nv_inference_request_success{model="tagger",version="3"} 40
nv_inference_request_success{model="tagger",version="4"} 10
nv_inference_request_success{model="other",version="4"} 99
# TYPE nv_inference_count counter
nv_inference_count{model="tagger",version="3"} 320
nv_inference_count{model="tagger",version="4"} 80
# TYPE nv_inference_compute_infer_duration_us counter
nv_inference_compute_infer_duration_us{model="tagger",version="3"} 640000
nv_inference_compute_infer_duration_us{model="tagger",version="4"} 400000
# TYPE nv_inference_request_summary_us summary
nv_inference_request_summary_us_count{model="tagger",version="3"} 40
nv_inference_request_summary_us_sum{model="tagger",version="3"} 800000
nv_inference_request_summary_us{model="tagger",version="3",quantile="0.5"} 18000
nv_inference_request_summary_us{model="tagger",version="3",quantile="0.99"} 41000
nv_inference_request_summary_us{model="tagger",version="4",quantile="0.5"} NaN
"""


def test_triton_metrics_give_each_version_its_request_duration_and_compute_per_image() -> None:
    from tools.triton_metrics import version_costs

    costs = version_costs(TRITON_METRICS, "tagger", ["3", "4", "9"])
    assert costs["3"] == {"request_p50_us": 18000.0, "request_p99_us": 41000.0, "compute_us_per_image": 2000.0,
                          "images": 320.0, "requests": 40.0}  # fmt: skip
    assert costs["4"]["compute_us_per_image"] == 5000.0 and costs["4"]["request_p50_us"] is None
    assert costs["9"]["compute_us_per_image"] is None and costs["9"]["images"] == 0
    with pytest.raises(ValueError, match="not a Prometheus metrics page"):
        version_costs('nv_inference_count{model="tagger" 1 2 3 {', "tagger", ["3"])


def test_compare_refuses_a_metrics_url_that_is_not_http(tmp_path: Path) -> None:
    from tools.triton_metrics import scrape

    with pytest.raises(ValueError, match="not an http"):
        scrape("file:///etc/passwd")
    with pytest.raises(ValueError, match="cannot read Triton's metrics"):
        scrape("http://127.0.0.1:1/metrics")
