"""Wikitext -> text on 20 real zhwiki articles: cpm's renderer beside mwparserfromhell.

The articles are ``bench/data/zhwiki/*.wiki`` (CC BY-SA, see that folder's README); for each,
``expectations.json`` lists prose phrases a reader sees on the rendered page and markup or
boilerplate that must not survive. Extractors, measured in the same run:

* ``cpm``: :func:`cpm.pipeline.readers.wikitext.wikitext_to_text` (regex passes, the template
  table of :mod:`cpm.pipeline.readers.wiki_templates`);
* ``mwph+table``: mwparserfromhell's parse tree walked with the same template table, math
  policy and boilerplate-section rule (what switching to the maintained parser would give);
* ``strip_code``: mwparserfromhell's ``strip_code()`` alone, the anchor (Hugging Face's
  wikipedia builder uses it);
* ``--baseline-ref REF``: ``pipeline/wikitext.py`` or ``pipeline/readers/wikitext.py`` as of a
  git commit (for example the renderer before the template table).

Columns: phrases kept (% of all phrases), articles with markup residue, residue hits, and CPU
milliseconds per article (best of ``--repeat``) with the ratio to ``cpm``.

Usage: python bench/bench_wikitext.py [--repeat 5] [--baseline-ref 29b07a7] [--show ARTICLE]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

DATA = Path(__file__).resolve().parent / "data" / "zhwiki"
ROOT = Path(__file__).resolve().parents[1]
COMMON_RESIDUE = ["{{", "}}", "[[", "]]", "<ref", "</", "'''", "''", "Category:", "&nbsp;", "__", "{|", "|}",
                  "-{", "}-", "<math", "thumb", "cite web", "Cite web", "accessdate", "Reflist", "reflist"]  # fmt: skip
# boilerplate section headings: residue when one is a line of its own
BOILERPLATE_LINES = {"参见", "參見", "参考文献", "參考文獻", "参考资料", "參考資料", "外部链接", "外部連結", "相关条目",
                     "相關條目", "另見", "注释", "脚注", "延伸阅读", "References", "External links", "See also"}  # fmt: skip


def load_articles() -> tuple[dict[str, str], dict[str, dict]]:
    expectations = json.loads((DATA / "expectations.json").read_text(encoding="utf-8"))
    expectations.pop("_about", None)
    articles = {name: (DATA / name).read_text(encoding="utf-8") for name in sorted(expectations)}
    return articles, expectations


def residue_of(text: str, expected: dict) -> list[str]:
    allowed = set(expected.get("allowed", []))
    markers = [m for m in COMMON_RESIDUE if m not in allowed] + expected.get("absent", [])
    return [m for m in markers if m in text] + [line for line in text.split("\n") if line in BOILERPLATE_LINES]


# ------------------------------------------------------------------ mwparserfromhell extractors


def strip_code(wikitext: str) -> str:
    import mwparserfromhell

    return mwparserfromhell.parse(wikitext).strip_code()


def mwph_table(wikitext: str) -> str:
    """mwparserfromhell's tree walked with cpm's template table, math policy and section rules."""
    import mwparserfromhell
    from cpm.pipeline.readers import wikitext as cpm_wikitext

    held: list[str] = []
    text = _walk(mwparserfromhell.parse(wikitext), held)
    return cpm_wikitext.assemble_lines(cpm_wikitext.resolve_variants(text), held)


def _walk(code, held: list[str]) -> str:  # noqa: ANN001 - mwparserfromhell types
    from cpm.pipeline.readers import wiki_templates as table
    from cpm.pipeline.readers import wikitext as cpm_wikitext
    from mwparserfromhell import nodes

    out: list[str] = []
    for node in code.nodes:
        if isinstance(node, nodes.Text):
            out.append(str(node))
        elif isinstance(node, nodes.Template):
            name = str(node.name).strip()
            if table.is_listed(name):
                args = table.Arguments()
                for param in node.params:
                    value = _walk(param.value, held).strip()
                    if param.showkey:
                        args.named[str(param.name).strip().lower()] = value
                    else:
                        args.positional.append(value)
                out.append(table.render_template(name, args) or "")
        elif isinstance(node, nodes.Wikilink):
            target = str(node.title)
            label = _walk(node.text, held) if node.text is not None else None
            out.append(cpm_wikitext.link_text(target, label))
        elif isinstance(node, nodes.ExternalLink):
            out.append(_walk(node.title, held) if node.title is not None else "")
        elif isinstance(node, nodes.Heading):
            marks = "=" * node.level
            out.append(f"{marks} {_walk(node.title, held).strip()} {marks}")
        elif isinstance(node, nodes.Tag):
            tag = str(node.tag).lower()
            if tag in ("math", "chem", "ce"):
                held.append(" ".join(str(node.contents).split()))
                out.append(f"\ue000{len(held) - 1}\ue001")
            elif tag == "nowiki":
                held.append(str(node.contents))
                out.append(f"\ue002{len(held) - 1}\ue001")
            elif tag == "br":
                out.append("\n")
            elif tag in ("table",) or str(node.wiki_markup or "") == "{|":
                continue
            elif tag not in ("ref", "references", "gallery", "timeline", "score", "syntaxhighlight", "source",
                             "imagemap", "table", "tr", "td", "th"):  # fmt: skip
                out.append(_walk(node.contents, held) if node.contents is not None else "")
        elif isinstance(node, nodes.HTMLEntity):
            out.append(node.normalize())
        # Comment, Argument: nothing
    return "".join(out)


def baseline_from_git(ref: str) -> Callable[[str], str]:
    """``wikitext_to_text`` of the renderer as of a git commit."""
    for path in ("pipeline/readers/wikitext.py", "pipeline/wikitext.py"):
        shown = subprocess.run(["git", "show", f"{ref}:{path}"], cwd=ROOT, capture_output=True, text=True)
        if shown.returncode == 0:
            break
    else:
        sys.exit(f"no wikitext.py at {ref}")
    module_path = Path(tempfile.mkdtemp()) / "wikitext_baseline.py"
    module_path.write_text(shown.stdout, encoding="utf-8")
    spec = importlib.util.spec_from_file_location("wikitext_baseline", module_path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module.wikitext_to_text


# ------------------------------------------------------------------ measuring


def cpu_ms_per_article(extract: Callable[[str], str], articles: dict[str, str], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.process_time()
        for wikitext in articles.values():
            extract(wikitext)
        best = min(best, time.process_time() - start)
    return 1000 * best / len(articles)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5, help="timing repetitions, best kept (default 5)")
    parser.add_argument("--baseline-ref", help="also measure wikitext.py as of this git commit")
    parser.add_argument("--show", help="print every extractor's text of this article and its misses")
    args = parser.parse_args()

    from cpm.pipeline.readers.wikitext import wikitext_to_text

    articles, expectations = load_articles()
    extractors: dict[str, Callable[[str], str]] = {"cpm": wikitext_to_text, "mwph+table": mwph_table}
    extractors["strip_code"] = strip_code
    if args.baseline_ref:
        extractors[f"cpm@{args.baseline_ref}"] = baseline_from_git(args.baseline_ref)

    total_phrases = sum(len(e["phrases"]) for e in expectations.values())
    rows = []
    for name, extract in extractors.items():
        kept = residue_articles = residue_hits = 0
        for article, wikitext in articles.items():
            text = extract(wikitext)
            flat = re.sub(r"\s*\n\s*", "", text)  # a phrase may span a line the renderer broke
            expected = expectations[article]
            kept += sum(p in text or p in flat for p in expected["phrases"])
            residue = residue_of(text, expected)
            residue_articles += bool(residue)
            residue_hits += len(residue)
            if args.show and args.show in article:
                missed = [p for p in expected["phrases"] if p not in text and p not in flat]
                print(f"===== {name}: {article}\n{text}\n--- missed: {missed}\n--- residue: {residue}\n")
        ms = cpu_ms_per_article(extract, articles, args.repeat)
        rows.append((name, 100 * kept / total_phrases, residue_articles, residue_hits, ms))

    reference_ms = rows[0][4]
    print(f"{len(articles)} zhwiki articles, {total_phrases} phrases; CPU time per article, best of {args.repeat}")
    print(f"{'extractor':<18}{'phrases kept':>14}{'articles w/ residue':>21}{'residue hits':>14}{'ms/article':>12}{'x cpm':>8}")
    for name, kept_pct, residue_articles, residue_hits, ms in rows:
        print(f"{name:<18}{kept_pct:>13.1f}%{residue_articles:>21}{residue_hits:>14}{ms:>12.2f}{ms / reference_ms:>8.2f}")


if __name__ == "__main__":
    main()
