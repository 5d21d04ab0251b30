#!/usr/bin/env python3
"""Checks that the repository's documents stand on their own.

  1. README.md's header table has one row per header in include/memcg/ (and none for a header
     that is not there).
  2. No file refers to documents outside the repository: the developer notes (`shared/spec`,
     `kernel-model.md` and its `§` sections, `DESIGN.md`, `STYLE.md`) or a bare `model.md` /
     `scenario.md` (the documents are docs/model.md, docs/scenarios.md, docs/architecture.md).
  3. Every citation resolves: `docs/NAME.md, "Heading"` in any file (a comment may wrap it over
     lines), `docs/NAME.md#anchor`, and every Markdown link `](FILE.md#anchor)` or `](#anchor)`
     in a .md file names a heading that exists.

Usage: tests/check_docs.py [SOURCE_DIR]   (default: the repository of this script)
Prints one line per problem; exits 1 if there is any, 0 otherwise.
"""
import os
import re
import sys

root = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), ".."))
problems = []


def rel(path):
    return os.path.relpath(path, root)


def text_files():
    for d, dirs, files in os.walk(root):
        dirs[:] = sorted(x for x in dirs if x != ".git" and not x.startswith("build"))
        for f in sorted(files):
            p = os.path.join(d, f)
            try:
                with open(p, encoding="utf-8") as fh:
                    yield p, fh.read()
            except (UnicodeDecodeError, OSError):
                continue  # binary or unreadable: not a document


def slug(heading):
    """GitHub's anchor of a Markdown heading."""
    s = heading.strip().lower()
    s = re.sub(r"[^\w\- ]", "", s)
    return s.replace(" ", "-")


headings_cache = {}


def headings(md_path):
    """Heading texts and anchors of a Markdown file (outside code fences)."""
    if md_path in headings_cache:
        return headings_cache[md_path]
    texts, anchors, seen = set(), set(), {}
    fence = False
    try:
        with open(md_path, encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("```"):
                    fence = not fence
                    continue
                m = re.match(r"^(#{1,6})\s+(.*?)\s*#*\s*$", line)
                if fence or not m:
                    continue
                t = m.group(2)
                texts.add(t)
                a = slug(t)
                n = seen.get(a, 0)
                seen[a] = n + 1
                anchors.add(a if n == 0 else f"{a}-{n}")
    except OSError:
        texts = anchors = None
    headings_cache[md_path] = (texts, anchors)
    return texts, anchors


# ---- 1. README's header table ----
inc = os.path.join(root, "include", "memcg")
headers = sorted(f for f in os.listdir(inc) if f.endswith((".hpp", ".h")))
with open(os.path.join(root, "README.md"), encoding="utf-8") as fh:
    readme = fh.read()
rows = set(re.findall(r"^\| `memcg/([\w.]+)` \|", readme, re.M))
for h in headers:
    if h not in rows:
        problems.append(f"README.md: the header table has no row for memcg/{h}")
for r in sorted(rows - set(headers)):
    problems.append(f"README.md: the header table lists memcg/{r}, which is not in include/memcg")

# ---- 2. and 3. ----
outside = re.compile(r"shared/spec|kernel-model|DESIGN\.md|STYLE\.md|§")
bare = re.compile(r"(?<![\w/.-])(model|scenarios?|architecture)\.md")
# A comment's line break and leader, so that a citation wrapped over lines reads as one.
wrap = re.compile(r"\s*\n\s*(?://+|#+|\*|/\*)?\s*")
citation = re.compile(r"docs/(\w+)\.md,\s+\"([^\"]+)\"")
anchor_ref = re.compile(r"docs/(\w+)\.md#([\w-]+)")
md_link = re.compile(r"\]\(([^)\s#]*)#([\w-]+)\)")
this_file = os.path.abspath(__file__)

for path, text in text_files():
    if os.path.abspath(path) == this_file:
        continue
    name = rel(path)
    in_docs = name.startswith("docs" + os.sep)
    for no, line in enumerate(text.split("\n"), 1):
        m = outside.search(line)
        if m:
            problems.append(f"{name}:{no}: refers outside the repository ({m.group(0)!r})")
        if not in_docs:
            for m in bare.finditer(line):
                problems.append(f"{name}:{no}: {m.group(0)} without docs/ (a file outside the repository?)")
    joined = wrap.sub(" ", text)
    for m in citation.finditer(joined):
        doc = os.path.join(root, "docs", m.group(1) + ".md")
        texts, _ = headings(doc)
        if texts is None:
            problems.append(f"{name}: cites docs/{m.group(1)}.md, which does not exist")
        elif m.group(2) not in texts:
            problems.append(f"{name}: cites docs/{m.group(1)}.md, \"{m.group(2)}\": no such heading")
    for m in anchor_ref.finditer(text):
        doc = os.path.join(root, "docs", m.group(1) + ".md")
        _, anchors = headings(doc)
        if anchors is None or m.group(2) not in anchors:
            problems.append(f"{name}: docs/{m.group(1)}.md#{m.group(2)}: no such heading")
    if path.endswith(".md"):
        for m in md_link.finditer(text):
            target = m.group(1)
            if target and not target.endswith(".md"):
                continue
            doc = os.path.normpath(os.path.join(os.path.dirname(path), target)) if target else path
            _, anchors = headings(doc)
            if anchors is None or m.group(2) not in anchors:
                problems.append(f"{name}: link {target}#{m.group(2)}: no such heading")

for p in problems:
    print(p)
print(f"check_docs: {len(headers)} headers, {len(problems)} problem(s)")
sys.exit(1 if problems else 0)
