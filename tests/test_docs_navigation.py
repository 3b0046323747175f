"""docs/navigation.py: GitHub's heading anchors, the line a symbol is defined on, the nav blocks
on a few pages written here, and, on the real docs, that the tool has been run: every code link
anchored at its definition and every reading page with its Previous / Next lines."""

import re
from pathlib import Path

from docs.navigation import (CODE_LINK, END_BLOCK, NAV_BLOCK, anchored, contents_line, headings,
                             main, markdown_files, reading_pages, slug, slugs,
                             symbol_line, title, with_nav)

ROOT = Path(__file__).resolve().parents[1]


# ---- Anchors of headings ------------------------------------------------------------------------

def test_slug_is_githubs_anchor():
    known = {  # heading -> the id GitHub gives it
        "## Training: caption dropout": "training-caption-dropout",
        "## The idea": "the-idea",
        "## Shapes, the `--preset cpu` UNet (1.1M parameters)":
            "shapes-the---preset-cpu-unet-11m-parameters",
        "### `DDPMScheduler.step` (Algorithm 2)": "ddpmschedulerstep-algorithm-2",
        "## `x_t` and `eps_pred`": "x_t-and-eps_pred",
        "## The loss is stage 1's": "the-loss-is-stage-1s",
        "## Why — and when": "why--and-when",
        "## A [link](05-unet.md) in a heading": "a-link-in-a-heading",
        "## Fréchet distance": "fréchet-distance",
        "DDIM: fewer steps, optional noise (Song et al., 2021)":
            "ddim-fewer-steps-optional-noise-song-et-al-2021",
    }
    assert {heading: slug(heading) for heading in known} == known


def test_repeated_headings_are_numbered_as_on_github():
    assert slugs(["Try this", "The idea", "Try this", "Try this"]) == \
        ["try-this", "the-idea", "try-this-1", "try-this-2"]
    # github-slugger: a heading that already reads "a-1" pushes the next repeat of "a" on
    assert slugs(["a", "a-1", "a", "a"]) == ["a", "a-1", "a-2", "a-3"]
    assert slugs(["a", "a", "a-1"]) == ["a", "a-1", "a-1-1"]


def test_contents_lists_the_level_2_headings_outside_code_with_their_anchors():
    text = ("# 3. Title\n\n## Try this\n\n### Where it lives\n\n```bash\n## not a heading\n```\n\n"
            "## Try this\n\n## The `sample` function ([code](../x.py))\n")
    assert contents_line(text) == ("Contents: [Try this](#try-this) · [Try this](#try-this-1) · "
                                   "[The `sample` function (code)](#the-sample-function-code)")
    assert contents_line("# Title\n\nNo sections.\n") == ""


# ---- The line a symbol is defined on ------------------------------------------------------------

SOURCE = '''"""A module."""
import functools

SCALE = 0.18215
LIMIT: int = 3


def plain(x):
    return x


@functools.cache
@functools.wraps(plain)
def decorated(x):
    return x


async def waiting():
    pass


class Model:
    width: int = 4

    def __init__(self):
        self.weight = 1

    @classmethod
    def from_config(cls, cfg):
        def inner():
            pass
        return cls()

    def forward(self, x):
        return x


class Other:
    def forward(self, x):
        return x

    def only_here(self):
        self.weight = 2


if True:
    GUARDED = 1
'''


def line_of(text: str, nth: int = 0) -> int:
    """The line number of the nth line of SOURCE that contains text."""
    return [i for i, line in enumerate(SOURCE.splitlines(), start=1) if text in line][nth]


def test_symbol_line_finds_each_kind_of_definition(tmp_path):
    path = tmp_path / "module.py"
    path.write_text(SOURCE)
    expected = {
        "plain": line_of("def plain"),
        "decorated": line_of("def decorated"),         # the def, not the decorators above it
        "waiting": line_of("async def waiting"),
        "Model": line_of("class Model"),
        "Model.forward": line_of("def forward"),
        "Other.forward": line_of("def forward", nth=1),
        "Model.from_config": line_of("def from_config"),
        "Model.width": line_of("width: int"),
        "Model.weight": line_of("self.weight = 1"),    # set in __init__
        "SCALE": line_of("SCALE ="),
        "LIMIT": line_of("LIMIT: int"),
        "GUARDED": line_of("GUARDED ="),
        "only_here": line_of("def only_here"),          # a bare name: the one class member
    }
    assert expected["Model.forward"] != expected["Other.forward"]
    assert {symbol: symbol_line(path, symbol) for symbol in expected} == expected


def test_symbol_line_reports_what_is_not_there(tmp_path):
    path = tmp_path / "module.py"
    path.write_text(SOURCE)
    for symbol in ("missing", "Model.missing", "Other.width", "inner", "Model.from_config.inner",
                   "forward",   # a method of two classes: ambiguous, so no answer
                   "weight"):   # likewise
        assert symbol_line(path, symbol) is None, symbol
    assert symbol_line(tmp_path / "absent.py", "plain") is None
    (tmp_path / "broken.py").write_text("def (\n")
    assert symbol_line(tmp_path / "broken.py", "plain") is None


def test_code_links_get_the_line_of_their_symbol(tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "module.py").write_text(SOURCE)
    (tmp_path / "docs").mkdir()
    page = tmp_path / "docs" / "page.md"
    forward = line_of("def forward")
    text = ("See [`Model.forward`](../pkg/module.py), [`plain(x)`](../pkg/module.py#L999) and "
            "[`SCALE`](../pkg/module.py#L4).\n"
            "The file: [pkg/module.py](../pkg/module.py), [`module.py`](../pkg/module.py).\n"
            "```\n[`plain`](../pkg/module.py)\n```\n"
            "Gone: [`vanished`](../pkg/module.py#L7).\n")
    new, problems = anchored(text, page)
    assert new == (f"See [`Model.forward`](../pkg/module.py#L{forward}), "
                   f"[`plain(x)`](../pkg/module.py#L{line_of('def plain')}) and "
                   "[`SCALE`](../pkg/module.py#L4).\n"
                   "The file: [pkg/module.py](../pkg/module.py), [`module.py`](../pkg/module.py).\n"
                   "```\n[`plain`](../pkg/module.py)\n```\n"
                   "Gone: [`vanished`](../pkg/module.py#L7).\n")
    assert len(problems) == 1 and "vanished" in problems[0] and ":6:" in problems[0]
    assert anchored(new, page) == (new, problems)


# ---- The tool on a few pages --------------------------------------------------------------------

PAGES = {
    "01-noise.md": "# 1. Noise: adding it\n\nText.\n\n## The idea\n\nMore.\n\n## Try this\n\n"
                   "- [`plain`](../code.py)\n\nNext: [2. Sampling](02-sampling.md).\n",
    "02-sampling.md": "# 2. Sampling\n\n## Where it lives\n\n```bash\n# a comment\n```\n\n"
                      "Next, with stage 2: point 3. Index: [docs/README.md](README.md).\n",
    "flow-matching.md": "# Beyond the video: from DDPM to flow matching\n\nThe end, with no "
                        "Next line.\n",
    "README.md": "# Index\n\n- [`Model.forward`](../code.py)\n",
    "notes.md": "# Not a reading page\n",
}


def write_pages(root: Path) -> None:
    (root / "docs" / "lab").mkdir(parents=True)
    (root / "code.py").write_text(SOURCE)
    (root / "README.md").write_text("# Project\n\n[`SCALE`](code.py), [code.py](code.py)\n")
    for name, text in PAGES.items():
        (root / "docs" / name).write_text(text)
    (root / "docs" / "lab" / "2026-01-01-run.md").write_text("[`plain`](../../code.py)\n")


def test_the_tool_adds_the_nav_blocks_and_anchors_and_a_second_run_changes_nothing(tmp_path):
    write_pages(tmp_path)
    assert main(["--root", str(tmp_path), "--check"]) == 1
    assert (tmp_path / "docs" / "01-noise.md").read_text() == PAGES["01-noise.md"]  # check writes nothing
    assert main(["--root", str(tmp_path)]) == 0
    first = {p: p.read_text() for p in sorted(tmp_path.rglob("*.md"))}
    assert main(["--root", str(tmp_path)]) == 0
    assert {p: p.read_text() for p in sorted(tmp_path.rglob("*.md"))} == first
    assert main(["--root", str(tmp_path), "--check"]) == 0

    docs = tmp_path / "docs"
    one, two, flow = ((docs / name).read_text() for name in
                      ("01-noise.md", "02-sampling.md", "flow-matching.md"))
    assert one.startswith("# 1. Noise: adding it\n\n<!-- nav -->\n"
                          "[Index](README.md) · [2. Sampling →](02-sampling.md)\n\n"
                          "Contents: [The idea](#the-idea) · [Try this](#try-this)\n"
                          "<!-- /nav -->\n\nText.\n")
    assert one.endswith("- [`plain`](../code.py#L8)\n\n<!-- nav-end -->\n"
                        "[Index](README.md) · [2. Sampling →](02-sampling.md)\n<!-- /nav-end -->\n")
    assert "Next:" not in one
    middle = ("[← 1. Noise](01-noise.md) · [Index](README.md) · "
              "[From DDPM to flow matching →](flow-matching.md)")
    assert two.startswith(f"# 2. Sampling\n\n<!-- nav -->\n{middle}\n\n"
                          "Contents: [Where it lives](#where-it-lives)\n<!-- /nav -->\n\n")
    assert "Next, with stage 2" not in two and two.endswith(f"```\n\n<!-- nav-end -->\n{middle}\n"
                                                             "<!-- /nav-end -->\n")
    assert flow.startswith("# Beyond the video: from DDPM to flow matching\n\n<!-- nav -->\n"
                           "[← 2. Sampling](02-sampling.md) · [Index](README.md)\n<!-- /nav -->\n")
    assert "with no Next line.\n\n<!-- nav-end -->" in flow and "→" not in flow   # the last page

    assert (docs / "notes.md").read_text() == PAGES["notes.md"]          # not a reading page
    assert (docs / "README.md").read_text() == \
        f"# Index\n\n- [`Model.forward`](../code.py#L{line_of('def forward')})\n"
    assert (tmp_path / "README.md").read_text() == "# Project\n\n[`SCALE`](code.py#L4), [code.py](code.py)\n"
    assert (docs / "lab" / "2026-01-01-run.md").read_text() == "[`plain`](../../code.py)\n"


def test_a_new_first_page_and_a_changed_title_update_the_existing_blocks(tmp_path):
    write_pages(tmp_path)
    main(["--root", str(tmp_path)])
    docs = tmp_path / "docs"
    (docs / "00-overview.md").write_text("# 0. Overview\n\nStart here.\n")
    (docs / "02-sampling.md").write_text(
        (docs / "02-sampling.md").read_text().replace("# 2. Sampling", "# 2. Sampling, step by step"))
    assert main(["--root", str(tmp_path)]) == 0
    one = (docs / "01-noise.md").read_text()
    line = ("[← 0. Overview](00-overview.md) · [Index](README.md) · "
            "[2. Sampling, step by step →](02-sampling.md)")
    assert one.count(line) == 2 and one.count("<!-- nav -->") == 1 and one.count("<!-- nav-end -->") == 1
    assert (docs / "00-overview.md").read_text().startswith(
        "# 0. Overview\n\n<!-- nav -->\n[Index](README.md) · [1. Noise →](01-noise.md)\n<!-- /nav -->")


def test_a_symbol_the_file_lacks_is_listed_and_fails_the_run(tmp_path, capsys):
    write_pages(tmp_path)
    (tmp_path / "docs" / "notes.md").write_text("# Notes\n\n[`renamed_away`](../code.py#L3)\n")
    assert main(["--root", str(tmp_path)]) == 1
    assert "docs/notes.md:3: [`renamed_away`](../code.py)" in capsys.readouterr().err
    assert (tmp_path / "docs" / "notes.md").read_text().endswith("(../code.py#L3)\n")  # no guess


# ---- The real docs: has the tool been run? -------------------------------------------------------

def test_every_code_link_in_the_docs_is_anchored_at_its_definition():
    """Fails until `python -m docs.navigation` has been run after the docs or the code changed."""
    stale, problems = [], []
    for page in markdown_files(ROOT):
        text = page.read_text()
        new, found = anchored(text, page)
        problems += found
        stale += [f"{page.relative_to(ROOT)}: {old.strip()[:100]}" for old, line
                  in zip(text.splitlines(), new.splitlines()) if old != line]
    assert problems == [], "symbols defined nowhere in their file:\n" + "\n".join(problems)
    assert stale == [], (f"{len(stale)} lines with code links not anchored at the definition; run "
                         "`python -m docs.navigation`:\n" + "\n".join(stale[:20]))


def test_the_code_link_check_sees_the_docs_links():
    """The check above is not vacuous: the docs link to code symbols, most pages several times."""
    symbols = [m for page in markdown_files(ROOT) for m in CODE_LINK.finditer(page.read_text())
               if not m.group("symbol").endswith(".py")]
    assert len(symbols) > 100


def test_every_reading_page_has_its_previous_and_next_lines():
    """Fails until `python -m docs.navigation` has been run on the docs."""
    pages = reading_pages(ROOT / "docs")
    assert [p.name for p in pages[:2]] in (["00-overview.md", "01-generative-models.md"],
                                           ["01-generative-models.md", "02-forward-diffusion.md"])
    order = [(page.name, title(page.read_text())) for page in pages]
    missing, stale = [], []
    for index, page in enumerate(pages):
        text = page.read_text()
        if not (NAV_BLOCK.search(text) and END_BLOCK.search(text)):
            missing.append(page.name)
        elif with_nav(text, order, index) != text:
            stale.append(page.name)
    assert missing == [] and stale == [], (f"no nav blocks: {missing}; out of date: {stale}; run "
                                           "`python -m docs.navigation`")


def test_every_heading_anchor_a_doc_links_to_exists():
    """[..](#the-idea), [..](05-unet.md#the-equations): the page has that heading (or an <a id>)."""
    broken = []
    for page in markdown_files(ROOT):
        for target in re.findall(r"\]\(([^)\s]*#[^)\s]+)\)", page.read_text()):
            file, anchor = target.split("#", 1)
            destination = (page.parent / file) if file else page
            if destination.suffix != ".md" or not destination.is_file():
                continue  # a .py line anchor, or a link test_docs.py reports
            text = destination.read_text()
            ids = set(slugs([words for _, words in headings(text)]))
            ids |= set(re.findall(r"<a (?:id|name)=\"([^\"]+)\"", text))
            if anchor not in ids:
                broken.append(f"{page.relative_to(ROOT)}: {target}")
    assert broken == []
