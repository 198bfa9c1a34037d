"""The repository's documentation is self-contained: code, tests, benchmarks, configs and the README cite only
documents that ship in ``docs/`` (by their ``docs/<name>.md`` path, and only sections those documents have),
and nothing outside the repository. ``docs/`` links only to its own files.

Files scanned: every file git knows (tracked, or untracked and not ignored), or, without git, the files under
the repository's source folders; binary files are skipped. This file is not scanned (it spells out what it
looks for)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
OUTSIDE = ("../" + "shared", "shared/" + "docs")  # the developers' private folder, which users do not have
PRIVATE = ("algorithms", "architecture", "deployment", "performance", "sources", "cpu_engines")  # documents there
FOLDERS = ("src", "tests", "benchmarks", "docs", ".ci")
SKIP_DIRS = {".git", ".venv", "__pycache__", ".pytest_cache", ".ruff_cache", "node_modules"}

# docs/<name>.md, optionally in backticks, then a chain of sections: "§3.2", "§2–4, §6", "§9–10", "§3.2–3.3"
SECTIONS = r"((?:(?:,\s*|\s+|\s+and\s+)§\d+(?:\.\d+)?(?:[–-]\d+(?:\.\d+)?)?)*)"
CITATION = re.compile(r"(?<![\w./-])docs/([\w-]+)\.md`*" + SECTIONS)
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)" + SECTIONS)
MD_NAME = re.compile(r"(?<![\w.-])((?:[\w.-]+/)*)([\w-]+)\.md\b")
SECTION_REF = re.compile(r"§(\d+(?:\.\d+)?)(?:[–-](\d+(?:\.\d+)?))?")
HEADING = re.compile(r"^#{2,4} (\d+(?:\.\d+)*)\.? ", re.MULTILINE)


def scanned_files() -> list[Path]:
    """The repository's text files (see the module docstring), as paths relative to the root."""
    try:
        out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                             capture_output=True, text=True, check=True, timeout=60).stdout
        names = [Path(line) for line in out.splitlines() if line]
    except (OSError, subprocess.SubprocessError):
        names = [p.relative_to(ROOT) for folder in FOLDERS for p in (ROOT / folder).rglob("*")
                 if p.is_file() and not SKIP_DIRS & set(p.relative_to(ROOT).parts)]
        names += [Path(n) for n in ("README.md", "Makefile", "pyproject.toml") if (ROOT / n).is_file()]
    this = Path(__file__).resolve().relative_to(ROOT)
    return sorted(n for n in names if n != this and (ROOT / n).is_file())


def text_of(path: Path) -> str | None:
    data = (ROOT / path).read_bytes()
    if b"\0" in data:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def sections_of(doc: Path) -> set[str]:
    """The numbers of a document's headings: "3", "3.2", …"""
    return set(HEADING.findall(doc.read_text()))


def cited_sections(chain: str) -> list[str]:
    return [n for m in SECTION_REF.finditer(chain) for n in m.groups() if n]


def line_of(text: str, pos: int) -> int:
    return text.count("\n", 0, pos) + 1


def problems_in(path: Path, text: str, markdown_names: set[str]) -> list[str]:
    """What is wrong with the citations of one file outside docs/; ``markdown_names``: the file names of every
    Markdown file in the repository."""
    found = []
    for bad in OUTSIDE:
        for m in re.finditer(re.escape(bad), text):
            found.append(f"{path}:{line_of(text, m.start())}: cites {bad!r}, which is not part of the repository")
    for m in MD_NAME.finditer(text):
        prefix, name = m.groups()
        where = f"{path}:{line_of(text, m.start())}: {m.group(0)!r}"
        if prefix.endswith("docs/") and prefix != "docs/":
            found.append(f"{where}: not the repository's docs/ folder")
        elif not prefix and (DOCS / f"{name}.md").is_file():
            found.append(f"{where}: cite it as docs/{name}.md")
        elif not prefix and f"{name}.md" not in markdown_names and (name in PRIVATE or text.startswith(" §", m.end())):
            found.append(f"{where}: no such document in the repository")  # a private name, or cited by section
    for m in CITATION.finditer(text):
        name, chain = m.groups()
        doc = DOCS / f"{name}.md"
        if not doc.is_file():
            found.append(f"{path}:{line_of(text, m.start())}: docs/{name}.md does not exist")
            continue
        missing = [s for s in cited_sections(chain) if s not in sections_of(doc)]
        if missing:
            found.append(f"{path}:{line_of(text, m.start())}: docs/{name}.md has no section {', '.join(missing)}")
    return found


def test_code_tests_benchmarks_and_readme_cite_only_docs_the_repository_ships():
    files = scanned_files()
    markdown_names = {p.name for p in files if p.suffix == ".md"} | {p.name for p in DOCS.glob("*.md")}
    problems = []
    for path in files:
        if path.parts[0] == "docs":
            continue
        text = text_of(path)
        if text is not None:
            problems += problems_in(path, text, markdown_names)
    assert not problems, "\n".join(problems)


def test_docs_link_only_to_files_and_sections_that_exist():
    docs = sorted(DOCS.glob("*.md"))
    assert {d.name for d in docs} >= {"methods.md", "architecture.md", "deployment.md", "performance.md"}
    problems = []
    for doc in docs:
        text = doc.read_text()
        rel = doc.relative_to(ROOT)
        for bad in OUTSIDE:
            if bad in text:
                problems.append(f"{rel}: cites {bad!r}")
        for m in LINK.finditer(text):
            target, chain = m.groups()
            if "://" in target:
                continue
            linked = (doc.parent / target).resolve()
            if not linked.exists():
                problems.append(f"{rel}:{line_of(text, m.start())}: link to {target} goes nowhere")
                continue
            missing = [s for s in cited_sections(chain) if linked.suffix == ".md" and s not in sections_of(linked)]
            if missing:
                problems.append(f"{rel}:{line_of(text, m.start())}: {target} has no section {', '.join(missing)}")
    assert not problems, "\n".join(problems)


def test_the_checker_catches_planted_citations():
    text = ("see ../" + "shared/docs/performance.md, algorithms.md §3, performance.md, docs/nowhere.md, "
            "docs/methods.md §42 and docs/deployment.md §2–4, §6; fine: docs/methods.md §3.2–3.3, "
            "``docs/architecture.md`` §2, benchmarks/README.md, README.md, summary.md; not fine: sources.md")
    problems = problems_in(Path("x.py"), text, {"README.md", "methods.md", "architecture.md", "deployment.md",
                                                 "performance.md"})
    expected = ["cites '../" + "shared'", "cites 'shared/" + "docs'", "'../" + "shared/docs/performance.md': not the",
                "'algorithms.md': no such document", "'performance.md': cite it as docs/performance.md",
                "docs/nowhere.md does not exist", "docs/methods.md has no section 42", "'sources.md': no such"]
    for fragment in expected:
        assert any(fragment in p for p in problems), (fragment, problems)
    assert len(problems) == len(expected), problems


def test_readme_and_help_name_the_methods_a_cuda_graph_captures():
    import re

    from typer.testing import CliRunner

    from ddpg.cli.main import app
    from ddpg.runtime.graph_runner import GRAPH_METHODS

    readme = (ROOT / "README.md").read_text()
    listed = re.search(r"`--cuda-graph` \(([a-z/]+) on CUDA", readme)
    assert listed and tuple(listed.group(1).split("/")) == GRAPH_METHODS
    help_text = " ".join(CliRunner().invoke(app, ["restore", "--help"], env={"COLUMNS": "200"}).output.split())
    assert f"capture each whole {'/'.join(GRAPH_METHODS)} step" in help_text, help_text
