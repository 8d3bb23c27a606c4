"""The vocabulary report, in Markdown or HTML: what was kept and why, what was dropped and why, how much of
the search volume the vocabulary covers, and which input lines could not be used.

The report is built once as a list of sections (a heading, a lead paragraph, a table) and rendered by
one of two small writers, so both formats always say the same thing.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path

from trainer.vocab.inputs import BadLines
from trainer.vocab.selection import Candidate, Outcome

FORMATS = {".md": "markdown", ".markdown": "markdown", ".html": "html", ".htm": "html"}


@dataclass
class Section:
    title: str
    lead: list[str] = field(default_factory=list)
    header: list[str] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)


def report_format(path: Path) -> str:
    """``markdown`` or ``html`` from the report's file name; a ValueError names the accepted endings."""
    try:
        return FORMATS[path.suffix.lower()]
    except KeyError:
        raise ValueError(f"{path}: report must end in one of {', '.join(FORMATS)}") from None


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _visual_cells(c: Candidate) -> list[str]:
    v = c.visual
    return [f"{v.ap:.3f}", f"{v.chance_ap:.3f}", f"{v.gain:.3f}", f"{v.z:.1f}"] if v else ["–"] * 4


def _bad_rows(bad: BadLines) -> list[list[str]]:
    return [[bad.file, str(line), reason] for line, reason in bad.examples]


def sections(outcome: Outcome, top_dropped: int = 30) -> list[Section]:
    """The report's content, format-free."""
    d, u, vocab = outcome.demand, outcome.usage, outcome.vocabulary
    summary = Section(
        "Summary",
        lead=[
            f"Vocabulary `{vocab.version}`: {len(vocab.tags)} tags (K = {outcome.criteria.k}), "
            f"{len(vocab.aliases)} aliases, chosen from {len(outcome.candidates)} candidates.",
            f"Search volume covered: {_pct(outcome.coverage['any'])} of {d.volume:,} searches name a kept tag; "
            f"{_pct(outcome.coverage['all'])} name only kept tags (besides stop tags).",
            f"Inputs: {d.queries:,} usable query lines of {d.lines:,} ({d.bad.total} bad); "
            f"{u.photos:,} photos by {len(u.owners):,} owners ({u.bad.total} bad lines).",
        ],
    )
    if outcome.evaluation:
        ev = outcome.evaluation
        summary.lead.append(
            f"Against known truth: recall {ev['recall']:.3f}, precision {ev['precision']:.3f}"
            + (f", synonyms merged {ev['merged']:.3f}" if "merged" in ev else "")
            + (f"; missed: {', '.join(ev['missed'])}" if ev["missed"] else "")
            + (f"; not in truth: {', '.join(ev['extra'])}" if ev["extra"] else "")
            + "."
        )
    visual_header = ["probe AP", "chance AP", "gain", "z"]
    kept = Section(
        "Kept tags",
        lead=[
            "Score = sqrt(search share × owner share); visualness is the held-out AP of a linear probe on "
            "image features against chance (see docs/vocab.md)."
        ],  # fmt: skip
        header=["rank", "tag", "score", "searches", "photos", "owners", *visual_header, "aliases"],
    )
    aliases: dict[str, list[str]] = {}
    for form, tag in vocab.aliases.items():
        aliases.setdefault(tag, []).append(form)
    for rank, c in enumerate(outcome.kept, 1):
        kept.rows.append(
            [str(rank), c.tag, f"{c.score:.4f}", f"{c.searches:,}", f"{c.photos:,}", f"{c.owners:,}",
             *_visual_cells(c), ", ".join(sorted(aliases.get(c.tag, [])))]
        )  # fmt: skip
    dropped_all = [c for c in outcome.candidates if not c.kept]
    dropped = Section(
        "Top dropped candidates",
        lead=[
            f"The {min(top_dropped, len(dropped_all))} most searched of {len(dropped_all)} dropped candidates."
        ],
        header=["tag", "searches", "photos", "owners", *visual_header, "reason"],
        rows=[
            [c.tag, f"{c.searches:,}", f"{c.photos:,}", f"{c.owners:,}", *_visual_cells(c), c.reason]
            for c in dropped_all[:top_dropped]
        ],
    )
    bad = Section(
        "Bad input lines",
        lead=[
            f"{d.bad.total} in the query log, {u.bad.total} in the manifest; the first of each are listed."
        ],
        header=["file", "line", "problem"],
        rows=_bad_rows(d.bad) + _bad_rows(u.bad),
    )
    out = [summary, kept, dropped, bad]
    if outcome.probe is not None and outcome.probe.unreadable_total:
        p = outcome.probe
        out.append(
            Section(
                "Unreadable images",
                lead=[
                    f"{p.unreadable_total} sampled images could not be decoded; the probe used {p.images}."
                ],
                header=["path", "error"],
                rows=[list(row) for row in p.unreadable],
            )
        )
    return out


def _markdown(title: str, parts: list[Section]) -> str:
    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    lines = [f"# {title}", ""]
    for s in parts:
        lines += [f"## {s.title}", ""]
        lines += [p for para in s.lead for p in (para, "")]
        if s.header:
            lines.append("| " + " | ".join(s.header) + " |")
            lines.append("|" + "---|" * len(s.header))
            lines += ["| " + " | ".join(cell(x) for x in row) + " |" for row in s.rows]
            lines.append("")
    return "\n".join(lines)


def _html(title: str, parts: list[Section]) -> str:
    e = html.escape
    body = [f"<h1>{e(title)}</h1>"]
    for s in parts:
        body.append(f"<h2>{e(s.title)}</h2>")
        body += [f"<p>{e(p)}</p>" for p in s.lead]
        if s.header:
            head = "".join(f"<th>{e(h)}</th>" for h in s.header)
            rows = "".join("<tr>" + "".join(f"<td>{e(x)}</td>" for x in row) + "</tr>" for row in s.rows)
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
    style = (
        "body{font-family:system-ui,sans-serif;margin:2em;max-width:80em}"
        "table{border-collapse:collapse;margin-bottom:1em}td,th{border:1px solid #ccc;padding:2px 8px;"
        "text-align:left}th{background:#eee}"
    )
    return (
        f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>{e(title)}</title>'
        f"<style>{style}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )


def write_vocab_report(outcome: Outcome, path: Path) -> None:
    """Write the report as Markdown or HTML, chosen by the file's ending."""
    title = f"Darkroom vocabulary {outcome.vocabulary.version}"
    render = _html if report_format(path) == "html" else _markdown
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(title, sections(outcome)), encoding="utf-8")
