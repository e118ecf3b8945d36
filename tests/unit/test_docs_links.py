"""README.md and docs/*.md: every relative Markdown link (and image) points at a file of the repository,
and a link's #anchor, where it has one, at a heading of the Markdown file it names. Links outside code
blocks only; web links are not checked (no network in tests)."""

import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)
CODE_SPAN = re.compile(r"`[^`\n]*`")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)


def _prose(text: str) -> str:
    """The text without fenced blocks and code spans, where brackets are code, not links."""
    return CODE_SPAN.sub("", FENCE.sub("", text))


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, code marks and punctuation dropped, spaces to
    hyphens."""
    text = heading.strip().lower().replace("`", "")
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(markdown: str) -> set[str]:
    """Every heading's anchor; a repeated heading gets -1, -2, ... as GitHub numbers them."""
    seen: dict[str, int] = {}
    out = set()
    for heading in HEADING.findall(FENCE.sub("", markdown)):
        base = slug(heading)
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def broken_links(doc: Path, root: Path) -> list[str]:
    """The relative links of `doc` that name no file inside `root`, or no heading of the file they name."""
    bad = []
    text = doc.read_text(encoding="utf-8")
    for target in LINK.findall(_prose(text)):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        path_part, _, anchor = target.partition("#")
        dest = (doc.parent / path_part).resolve() if path_part else doc.resolve()
        if not dest.is_relative_to(root.resolve()):
            bad.append(f"{target}: outside the repository")
        elif not dest.exists():
            bad.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest.read_text(encoding="utf-8")):
            bad.append(f"{target}: no heading with that anchor")
    return bad


def _documents() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


@pytest.mark.parametrize("doc", _documents(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_relative_link_resolves(doc):
    assert broken_links(doc, ROOT) == []


def test_slugs_follow_githubs_rule():
    assert slug("Sweeps (Ray Tune + Optuna)") == "sweeps-ray-tune--optuna"
    assert slug("Math (the paper's setting)") == "math-the-papers-setting"
    assert slug("§2 The allocation rule (GVM)") == "2-the-allocation-rule-gvm"
    assert slug("The `base:` key") == "the-base-key"
    assert anchors("# A\n## A\n```\n# A\n```\n## B\n") == {"a", "a-1", "b"}


def test_the_checker_reports_each_kind_of_broken_link(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "other.md").write_text("# Other\n## Known part\n")
    (tmp_path / "img.png").write_bytes(b"")
    doc = tmp_path / "docs" / "a.md"
    doc.write_text(
        "# Title\n"
        "[ok](other.md#known-part) ![ok](../img.png) [ok](#title) [web](https://example.org/x)\n"
        "[gone](missing.md) [part](other.md#unknown) [self](#nowhere) [out](../../elsewhere.md)\n"
        "`[in code](missing2.md)`\n```\n[in block](missing3.md)\n```\n"
    )
    assert broken_links(doc, tmp_path) == [
        "missing.md: no such file",
        "other.md#unknown: no heading with that anchor",
        "#nowhere: no heading with that anchor",
        "../../elsewhere.md: outside the repository",
    ]


def _count(text: str, name: str) -> tuple[int, int]:
    return text.count(f"<!-- {name}:start -->"), text.count(f"<!-- {name}:end -->")


def test_marked_blocks_are_where_the_scripts_write_them():
    """`make bench` rewrites docs/results.md between the perf markers; the GVM study's report and its three
    answers are regenerated between theirs. Each block is there once, start before end."""
    results = (ROOT / "docs" / "results.md").read_text(encoding="utf-8")
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for text, name in [(results, "perf"), (results, "gvm-study"), (readme, "gvm-answers")]:
        assert _count(text, name) == (1, 1), name
        assert text.index(f"<!-- {name}:start -->") < text.index(f"<!-- {name}:end -->"), name
    assert _count(readme, "perf") == (0, 0) and _count(readme, "gvm-study") == (0, 0)
