"""Keep the docs' navigation in step with the pages and the code: a Previous / Index / Next line
and a contents line under each reading page's title, the same Previous / Index / Next line at its
end, and a line anchor (#L57) on every link from a code symbol to the .py file that defines it.

    python -m docs.navigation            # rewrite the pages in place
    python -m docs.navigation --check    # list the pages that would change; change nothing

Both exit 1 when a linked symbol is defined nowhere in its file (listed, never guessed), and
--check also when a page would change. Running it twice changes nothing the second time.
"""

import argparse
import ast
import re
import sys
from functools import cache
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]

# The reading order, in docs/: a name is a page, a pattern stands for its matches in name order
# (a page already named earlier is not repeated). Pages that do not exist are skipped.
READING_ORDER = (
    "00-overview.md",
    "[0-9][0-9]-*.md",            # the video's points, 01-... to 16-...
    "flow-matching.md",           # beyond the video
    "guidance-interval.md",
    "ema.md",
    "measuring-prompt-following.md",
    "your-own-data.md",
    "troubleshooting.md",
)
INDEX = "README.md"               # docs/README.md, the index every nav line links to
BEYOND_PREFIX = "Beyond the video: "  # dropped from a title in the nav line

NAV_START, NAV_END = "<!-- nav -->", "<!-- /nav -->"
END_START, END_END = "<!-- nav-end -->", "<!-- /nav-end -->"
NAV_BLOCK = re.compile(rf"{re.escape(NAV_START)}\n.*?{re.escape(NAV_END)}", flags=re.S)
END_BLOCK = re.compile(rf"{re.escape(END_START)}\n.*?{re.escape(END_END)}", flags=re.S)
# The hand-written last lines the end block replaces: "Next: [5. The UNet](05-unet.md).",
# "Next, with stage 2: ... Index: [docs/README.md](README.md).", "Index: [docs/README.md](README.md)."
OLD_LAST_LINE = re.compile(r"^(Next:|Next, |Index: )")

FENCE = re.compile(r"^\s{0,3}(```|~~~)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
# [`name`](path.py), [`Class.method()`](../path.py#L12), [`caption(attributes, rng)`](x.py)
CODE_LINK = re.compile(r"\[`(?P<symbol>[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)(?:\([^`]*\))?`\]"
                       r"\((?P<path>[^)\s#]+\.py)(?P<anchor>#[^)\s]*)?\)")


# ---- Pages and titles ---------------------------------------------------------------------------

def reading_pages(docs: Path) -> list[Path]:
    """The reading pages that exist in docs/, in READING_ORDER."""
    pages: list[Path] = []
    for entry in READING_ORDER:
        for page in sorted(docs.glob(entry)) if "*" in entry else [docs / entry]:
            if page.is_file() and page not in pages:
                pages.append(page)
    return pages


def outside_code(lines: list[str]) -> list[bool]:
    """For each line, whether it is Markdown text rather than part of a fenced code block."""
    flags, fence = [], None
    for line in lines:
        match = FENCE.match(line)
        if fence is None and match:
            fence = match.group(1)
            flags.append(False)
        elif fence is not None:
            flags.append(False)
            if line.strip().startswith(fence) and line.strip().strip(fence[0]) == "":
                fence = None
        else:
            flags.append(True)
    return flags


def headings(text: str) -> list[tuple[int, str]]:
    """(level, text) of every ATX heading outside code blocks, in page order."""
    lines = text.splitlines()
    return [(len(m.group(1)), m.group(2)) for line, prose in zip(lines, outside_code(lines))
            if prose and (m := HEADING.match(line))]


def title(text: str) -> str:
    """The page's `# ` heading."""
    return next((words for level, words in headings(text) if level == 1), "")


def short_title(heading: str) -> str:
    """The title as the nav line shows it: "4. Reverse diffusion: predict the noise..." gives
    "4. Reverse diffusion", "Beyond the video: guidance on an interval" gives "Guidance on an
    interval"."""
    words = heading.removeprefix(BEYOND_PREFIX).split(": ")[0].strip()
    return words[:1].upper() + words[1:]


def unlinked(heading: str) -> str:
    """A heading with its links replaced by their text, to sit inside a link of its own."""
    return re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)


def plain(heading: str) -> str:
    """A heading's text as rendered: links become their text, code and emphasis marks go."""
    return unlinked(heading).replace("`", "").replace("*", "")


# ---- GitHub anchors -----------------------------------------------------------------------------

def slug(heading: str) -> str:
    """GitHub's anchor for a heading (github-slugger): the rendered text in lower case, every
    character but letters, digits, '-', '_' and spaces dropped, each space a '-'."""
    words = plain(re.sub(r"^#{1,6}\s+", "", heading.strip())).lower()
    return "".join("-" if c == " " else c for c in words if c.isalnum() or c in "-_ ")


def slugs(all_headings: list[str]) -> list[str]:
    """The anchors of a page's headings in order: a repeated slug gets -1, -2, ... as on GitHub."""
    seen: dict[str, int] = {}
    found = []
    for heading in all_headings:
        base = candidate = slug(heading)
        while candidate in seen:
            seen[base] += 1
            candidate = f"{base}-{seen[base]}"
        seen[candidate] = 0
        found.append(candidate)
    return found


# ---- The nav blocks -----------------------------------------------------------------------------

def nav_line(pages: list[tuple[str, str]], index: int) -> str:
    """`[← previous](file) · [Index](README.md) · [next →](file)` for pages[index]; pages are
    (file name, title) in reading order. The first page has no Previous, the last no Next."""
    parts = []
    if index > 0:
        name, words = pages[index - 1]
        parts.append(f"[← {short_title(words)}]({name})")
    parts.append(f"[Index]({INDEX})")
    if index < len(pages) - 1:
        name, words = pages[index + 1]
        parts.append(f"[{short_title(words)} →]({name})")
    return " · ".join(parts)


def contents_line(text: str) -> str:
    """In-page links to the page's `## ` headings, or "" when it has none."""
    found = headings(text)
    anchors = slugs([words for _, words in found])
    links = [f"[{unlinked(words)}](#{anchor})"
             for (level, words), anchor in zip(found, anchors) if level == 2]
    return "Contents: " + " · ".join(links) if links else ""


def nav_block(pages: list[tuple[str, str]], index: int, text: str = "") -> str:
    """The block under the title: the nav line, and the contents line of `text` when it has
    `## ` headings."""
    contents = contents_line(text)
    body = nav_line(pages, index) + (f"\n\n{contents}" if contents else "")
    return f"{NAV_START}\n{body}\n{NAV_END}"


def end_block(pages: list[tuple[str, str]], index: int) -> str:
    return f"{END_START}\n{nav_line(pages, index)}\n{END_END}"


def with_nav(text: str, pages: list[tuple[str, str]], index: int) -> str:
    """The page with its two nav blocks put in or brought up to date."""
    block = nav_block(pages, index, text)
    if NAV_BLOCK.search(text):
        text = NAV_BLOCK.sub(lambda _: block, text, count=1)
    else:
        lines = text.split("\n")
        prose = outside_code(lines)
        at = next((i for i, line in enumerate(lines) if prose[i] and line.startswith("# ")), None)
        if at is None:
            at = -1  # no title: the block opens the page
        head, rest = "\n".join(lines[:at + 1]), "\n".join(lines[at + 1:]).lstrip("\n")
        text = (head + "\n\n" if head else "") + block + "\n\n" + rest
    ending = end_block(pages, index)
    if END_BLOCK.search(text):
        return END_BLOCK.sub(lambda _: ending, text, count=1)
    lines = text.rstrip("\n").split("\n")
    if OLD_LAST_LINE.match(lines[-1]):
        lines = lines[:-1]
    return "\n".join(lines).rstrip("\n") + "\n\n" + ending + "\n"


# ---- Line anchors on code links -----------------------------------------------------------------

def definitions(source: str) -> dict[str, int]:
    """{"name": line, "Class.method": line, ...}: every def, class and assignment at module level
    and in class bodies (through if/try/with blocks, not into functions), then each class's
    `self.name = ...` attributes (those of __init__ first). The first definition of a name wins;
    a decorated function's line is that of its `def`."""
    found: dict[str, int] = {}

    def attributes(cls: ast.ClassDef, prefix: str) -> None:
        methods = [n for n in cls.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
        for method in sorted(methods, key=lambda m: m.name != "__init__"):  # stable: __init__ first
            for node in ast.walk(method):
                targets = (node.targets if isinstance(node, ast.Assign) else
                           [node.target] if isinstance(node, ast.AnnAssign) else [])
                for target in targets:
                    for attribute in ast.walk(target):
                        if (isinstance(attribute, ast.Attribute)
                                and isinstance(attribute.value, ast.Name)
                                and attribute.value.id == "self"):
                            found.setdefault(prefix + attribute.attr, node.lineno)

    def visit(body: list[ast.stmt], prefix: str) -> None:
        for node in body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                found.setdefault(prefix + node.name, node.lineno)
            elif isinstance(node, ast.ClassDef):
                found.setdefault(prefix + node.name, node.lineno)
                visit(node.body, f"{prefix}{node.name}.")
                attributes(node, f"{prefix}{node.name}.")
            elif isinstance(node, (ast.Assign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for target in targets:
                    for name in ast.walk(target):
                        if isinstance(name, ast.Name):
                            found.setdefault(prefix + name.id, node.lineno)
            else:  # if / try / with / for at this level: their bodies are still this level
                for field in ("body", "orelse", "finalbody", "handlers"):
                    inner = getattr(node, field, [])
                    visit([n for n in inner if isinstance(n, ast.stmt)], prefix)
                    for handler in (n for n in inner if isinstance(n, ast.ExceptHandler)):
                        visit(handler.body, prefix)

    visit(ast.parse(source).body, "")
    return found


@cache
def file_definitions(path: Path, stamp: tuple[int, int]) -> dict[str, int]:
    """definitions() of a file, read once per version of it (stamp: mtime and size)."""
    return definitions(path.read_text())


def symbol_line(path: Path, symbol: str) -> int | None:
    """The line where `symbol` ("name" or "Class.method") is defined in the .py file at path.
    A bare name the module does not define may name a member of one class ("predict_x0" for
    "DDPMScheduler.predict_x0"); if members of two classes have it, that is no answer. None when
    the file does not define it, defines it ambiguously, or cannot be read or parsed."""
    path = Path(path)
    try:
        info = path.stat()
        found = file_definitions(path.resolve(), (info.st_mtime_ns, info.st_size))
    except (OSError, SyntaxError, ValueError):
        return None
    if symbol in found:
        return found[symbol]
    members = {line for name, line in found.items() if name.endswith("." + symbol)}
    return members.pop() if "." not in symbol and len(members) == 1 else None


def anchored(text: str, page_path: Path, where: str | None = None) -> tuple[str, list[str]]:
    """The page's text with each [`symbol`](file.py) link anchored at the symbol's line (#L<n>),
    and the problems: links whose symbol the file does not define (left as they were), each
    "where:line: ..." (where: the page's path unless given). A link to a whole file
    ([`models/unet.py`](...), [`sample.py`](...)) gets no anchor; links in code blocks none."""
    page_path = Path(page_path)
    where = where or str(page_path)
    problems: list[str] = []

    def anchor(match: re.Match, number: int) -> str:
        symbol, target = match.group("symbol"), match.group("path")
        if symbol.endswith(".py") or re.match(r"^[a-z]+://", target):
            return match.group(0)
        line = symbol_line(page_path.parent / target, symbol)
        if line is None:
            problems.append(f"{where}:{number}: [`{symbol}`]({target}): "
                            f"no {symbol} defined in {target}")
            return match.group(0)
        return match.group(0)[:match.end("path") - match.start()] + f"#L{line})"

    lines = text.split("\n")
    for number, (line, prose) in enumerate(zip(lines, outside_code(lines)), start=1):
        if prose:
            lines[number - 1] = CODE_LINK.sub(lambda m: anchor(m, number), line)
    return "\n".join(lines), problems


# ---- The whole docs -----------------------------------------------------------------------------

def markdown_files(root: Path) -> list[Path]:
    """README.md and every .md under docs/, except the lab notebook docs/lab/."""
    docs = root / "docs"
    files = [root / "README.md"] if (root / "README.md").is_file() else []
    return files + sorted(p for p in docs.rglob("*.md") if p.relative_to(docs).parts[0] != "lab")


def updated(root: Path) -> tuple[dict[Path, str], list[str]]:
    """{page: its new text} for every page that would change, and the problems found."""
    pages = reading_pages(root / "docs")
    order = [(page.name, title(page.read_text())) for page in pages]
    changes, problems = {}, []
    for path in markdown_files(root):
        text = path.read_text()
        new = with_nav(text, order, pages.index(path)) if path in pages else text
        new, found = anchored(new, path, where=path.relative_to(root).as_posix())
        problems += found
        if new != text:
            changes[path] = new
    return changes, problems


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default=str(REPOSITORY),
                        help="the repository whose README.md and docs/ to update")
    parser.add_argument("--check", action="store_true",
                        help="list the pages that would change and exit 1 if any; write nothing")
    args = parser.parse_args(argv)
    root = Path(args.root).resolve()
    changes, problems = updated(root)
    for path, text in changes.items():
        if args.check:
            print(f"would change: {path.relative_to(root)}")
        else:
            path.write_text(text)
            print(f"updated: {path.relative_to(root)}")
    for problem in problems:
        print(f"problem: {problem}", file=sys.stderr)
    return 1 if problems or (args.check and changes) else 0


if __name__ == "__main__":
    sys.exit(main())
