"""Calibration of the repetition filters (``duplicate_lines``, ``top_ngrams``, ``duplicate_ngrams``).

Clean text (must pass): the shared People's Daily 1998 paragraphs (one document each) and
news documents of 3-10 paragraphs (as ``bench/bench_corpus.py`` builds them), the shared
product reviews (one document each, and review pages of 5-20 reviews), and legal text:
``tests/data/legal/*.txt`` plus any laws given with ``--legal DIR`` (markdown or text files
of Chinese laws, regulations and judicial interpretations, e.g. a checkout of
github.com/LawRefBook/Laws). Spam (must be caught): ``tests/data/repetition_spam.jsonl.zst``
(``bench/make_spam_set.py``: templated, spun, keyword-stuffed, listing, repeated-block and
mixed pages).

For every statistic a filter computes, the table gives its maximum and 99.9% quantile on each
clean set, then each filter's rejection rate on every set with the thresholds of a source's
config (``--config``, default news), the share of spam caught by the three filters together
(by kind), and their CPU time per MB. ``--derive`` applies the calibration rule and prints
the limits it gives:

* plain text: the smallest limit that at most 0.03% of the documents of every clean set
  (People's Daily paragraphs and documents, reviews; review pages too for duplicated n-grams)
  exceed, raised by 5% and rounded up to 0.01;
* formal text (:func:`cpm.pipeline.clean.is_formal`: numbered articles/clauses): the largest
  value on the formal legal documents, raised by 10% and rounded up to 0.01.

Usage: python bench/bench_repetition.py [--legal DIR] [--config news] [--derive]
"""

from __future__ import annotations

import argparse
import io
import json
import math
import random
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from shared_corpora import read_lines  # noqa: E402
DATA = ROOT / "tests" / "data"



def grouped(items: list[str], low: int, high: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    docs, i = [], 0
    while i < len(items):
        n = rng.randint(low, high)
        docs.append("\n".join(items[i : i + n]))
        i += n
    return docs


def law_text(markdown: str) -> str:
    """A law page as the corpus would hold it: headings kept as lines, markup and metadata gone."""
    text = markdown.split("<!-- INFO END -->", 1)[-1] if "<!-- INFO END -->" in markdown else markdown
    lines = (re.sub(r"^#+\s*", "", line).strip() for line in text.splitlines())
    return "\n".join(line for line in lines if line)


def read_laws(paths: list[Path]) -> list[str]:
    files = sorted(DATA.joinpath("legal").glob("*.txt"))
    for path in paths:
        files += sorted(p for p in path.rglob("*") if p.suffix in (".md", ".txt") and not p.name.startswith("_"))
    return [law_text(f.read_text("utf-8")) for f in files]


def read_spam() -> list[dict]:
    import zstandard

    with open(DATA / "repetition_spam.jsonl.zst", "rb") as raw, zstandard.ZstdDecompressor().stream_reader(raw) as stream:
        return [json.loads(line) for line in io.TextIOWrapper(stream, encoding="utf-8") if line.strip()]


def statistics(text: str, top_ns: list[int], dup_ns: list[int]) -> dict[str, float]:
    """Every statistic the repetition filters compute, exactly (no early exits)."""
    from cpm.pipeline.clean import (duplicate_line_fraction, duplicate_ngram_fraction, is_formal, top_ngram_fraction,
                                    word_codes)

    words = codes = word_codes(text)
    stats = {"formal": float(is_formal(text)),
             "dup_lines": duplicate_line_fraction(text) if text.count("\n") >= 2 else 0.0}
    stats.update({f"top_{n}": top_ngram_fraction(words, n) for n in top_ns})
    stats.update({f"dup_{n}": duplicate_ngram_fraction(codes, n) for n in dup_ns})
    return stats


def quantile(values: list[float], q: float) -> float:
    ranked = sorted(values)
    return ranked[min(len(ranked) - 1, int(q * len(ranked)))] if ranked else 0.0


def limit_for(values_by_set: dict[str, list[float]], sizes: dict[str, int], share: float = 0.0003) -> float:
    """The smallest limit that at most ``share`` of the documents of every set exceed, +5%, rounded up."""
    limit = 0.0
    for name, values in values_by_set.items():
        ranked = sorted(values, reverse=True)
        k = int(share * sizes[name])
        limit = max(limit, ranked[k] if k < len(ranked) else 0.0)
    return math.ceil(limit * 1.05 * 100) / 100


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--legal", type=Path, nargs="*", default=[], help="directories of law texts (.md/.txt)")
    parser.add_argument("--config", default="news", help="source whose thresholds are applied (default news)")
    parser.add_argument("--derive", action="store_true", help="print the thresholds the calibration rule gives")
    args = parser.parse_args()

    from cpm.pipeline.clean import (RawRecord, Rejection, default_config, duplicate_lines, duplicate_ngrams,
                                    top_ngrams)

    config = default_config(args.config)
    top_ns = sorted({int(n) for n in [*config.top_char_ngrams, *config.formal_top_char_ngrams]})
    dup_ns = sorted({int(n) for n in [*config.dup_char_ngrams, *config.formal_dup_char_ngrams, 8, 10, 13, 20]})
    paragraphs = read_lines("people_daily_1998_paragraphs.txt.zst")
    reviews = read_lines("product_reviews.txt.zst")
    spam = read_spam()
    sets = {
        "People's Daily paragraphs": paragraphs,
        "People's Daily documents": grouped(paragraphs, 3, 10, 0),
        "product reviews": reviews,
        "review pages (5-20 reviews)": grouped(reviews, 5, 20, 1),
        "legal": read_laws(args.legal),
        "spam": [row["text"] for row in spam],
    }
    clean_sets = [name for name in sets if name != "spam"]
    eligible = {name: [d for d in docs if len(d) >= config.repetition_min_chars] for name, docs in sets.items()}
    stats = {name: [statistics(d, top_ns, dup_ns) for d in docs] for name, docs in eligible.items()}
    keys = list(stats["spam"][0])

    print(f"thresholds of the {args.config!r} config; documents >= {config.repetition_min_chars} characters")
    print(f"{'statistic':10} " + " ".join(f"{name[:16]:>16}" for name in clean_sets) + "   (max; 99.9% quantile)")
    for key in keys[1:]:
        cells = [f"{max((s[key] for s in stats[n]), default=0):.3f};{quantile([s[key] for s in stats[n]], 0.999):.3f}"
                 for n in clean_sets]
        print(f"{key:10} " + " ".join(f"{c:>16}" for c in cells))

    filters = [duplicate_lines, top_ngrams, duplicate_ngrams]
    print("formal documents: " + ", ".join(f"{n} {sum(s['formal'] for s in stats[n]):,}" for n in sets))
    print(f"\n{'set':30} {'docs':>7} {'>=min':>7} " + " ".join(f"{f.__name__:>17}" for f in filters) + f" {'any':>7}")
    cpu = {f.__name__: 0.0 for f in filters}
    size = 0
    for name, docs in sets.items():
        rejected = {f.__name__: 0 for f in filters}
        any_rejected = 0
        for i, doc in enumerate(docs):
            hit = False
            size += len(doc.encode())
            for f in filters:
                t0 = time.process_time()
                result = f(RawRecord(source=args.config, origin=f"{name}:{i}", text=doc), config)
                cpu[f.__name__] += time.process_time() - t0
                if isinstance(result, Rejection):
                    rejected[f.__name__] += 1
                    hit = True
            any_rejected += hit
        cells = " ".join(f"{rejected[f.__name__] / len(docs):>17.3%}" for f in filters)
        print(f"{name[:30]:30} {len(docs):>7,} {len(eligible[name]):>7,} {cells} {any_rejected / len(docs):>7.1%}")
    by_kind: dict[str, list[bool]] = {}
    for row in spam:
        record = RawRecord(source=args.config, origin="spam", text=row["text"])
        by_kind.setdefault(row["kind"], []).append(any(isinstance(f(record, config), Rejection) for f in filters))
    print("spam caught by kind: " + ", ".join(f"{k} {sum(v) / len(v):.0%}" for k, v in by_kind.items()))
    print("CPU per MB of all sets: " + ", ".join(f"{k} {v / (size / 1e6) * 1e3:.1f} ms" for k, v in cpu.items()))

    if args.derive:
        derive(stats, {name: len(docs) for name, docs in sets.items()}, keys)


def derive(stats: dict, sizes: dict[str, int], keys: list[str]) -> None:
    """The calibration rule of docs/corpus.md, applied to the measured statistics."""
    plain = {name: [s for s in rows if not s["formal"]] for name, rows in stats.items() if name not in ("legal", "spam")}
    formal = [s for s in stats["legal"] if s["formal"]]
    print("\nderived limits: plain text = at most 0.03% of each clean set above it (+5%; review pages not used for\n"
          "top n-grams); formal text = the largest value on the formal legal documents + 10%")
    derived: dict[str, dict[str, float]] = {"plain": {}, "formal": {}}
    for key in keys:
        if key in ("formal", "dup_lines"):
            continue
        sets = {n: [s[key] for s in rows] for n, rows in plain.items()
                if not (key.startswith("top") and n.startswith("review pages"))}
        derived["plain"][key] = limit_for(sets, sizes)
        derived["formal"][key] = math.ceil(max(s[key] for s in formal) * 1.1 * 100) / 100
        spam = sum(s[key] > derived["plain"][key] for s in stats["spam"]) / len(stats["spam"])
        print(f"  {key:8} plain {derived['plain'][key]:.2f} (spam above it: {spam:.0%})   formal {derived['formal'][key]:.2f}")
    print(json.dumps(derived))


if __name__ == "__main__":
    main()
