"""Traditional-script detection (the ``t2s`` cleaning step) measured on real text.

Simplified sets (must never be converted): the shared People's Daily 1998 paragraphs, one
document each and grouped 3-10 per document, and the shared product reviews. Traditional
sets (must be converted): the bundled Big5 novel sample (《水滸傳》, one document per
paragraph), People's Daily documents converted with OpenCC ``s2t`` and ``s2twp`` (Taiwan
phrasing), the reviews converted with ``s2t`` (short, informal), and any text given with
``--traditional FILE`` (UTF-8; JSON files from chinese-poetry are read as poems, other files
one document per paragraph).

For each set the table gives the distribution of the *traditional share* (traditional-only /
script-marking characters, see :mod:`cpm.pipeline.script`) over the documents with at least
3 traditional-only characters, how many documents the detector converts and the numbers
that matter:

* simplified sets: ``changed`` = documents converted *and* altered by the conversion, and the
  characters altered (target 0);
* traditional sets: ``missed`` = documents left alone although ``t2s`` would alter them, and
  the share of the set's characters in them (short lines with one or two traditional-only
  characters are the misses).

Usage: python bench/bench_script_detect.py [--traditional FILE ...]
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from shared_corpora import read_lines  # noqa: E402
SAMPLES = Path(__file__).resolve().parents[1] / "pipeline" / "samples"



def grouped(paragraphs: list[str], seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    docs, i = [], 0
    while i < len(paragraphs):
        n = rng.randint(3, 10)
        docs.append("\n".join(paragraphs[i : i + n]))
        i += n
    return docs


def read_traditional(path: Path) -> list[str]:
    text = path.read_text("utf-8")
    if path.suffix == ".json":
        return ["\n".join(item.get("paragraphs", [])) for item in json.loads(text) if item.get("paragraphs")]
    return [p.strip() for p in text.split("\n") if p.strip()]


def percentile(values: list[float], q: float) -> float:
    ranked = sorted(values)
    return ranked[min(len(ranked) - 1, int(q * len(ranked)))] if ranked else 0.0


def measure(name: str, docs: list[str], simplified: bool) -> dict:
    from cpm.pipeline.script import MIN_TRADITIONAL_CHARS, is_traditional, script_counts, to_simplified

    shares, converted, changed, chars, missed, missed_chars = [], 0, 0, 0, 0, 0
    for doc in docs:
        counts = script_counts(doc)
        if counts.traditional_distinct >= MIN_TRADITIONAL_CHARS:
            shares.append(counts.traditional_share)
        if is_traditional(counts):
            converted += 1
            if simplified:
                out = to_simplified(doc)
                diff = sum(a != b for a, b in zip(out, doc))
                changed += diff > 0
                chars += diff
        elif not simplified and to_simplified(doc) != doc:
            missed += 1
            missed_chars += len(doc)
    shares = shares or [0.0]
    return {
        "set": name, "docs": len(docs), "counted": len(shares), "min": min(shares), "p001": percentile(shares, 0.001),
        "median": percentile(shares, 0.5), "p999": percentile(shares, 0.999), "max": max(shares),
        "converted": converted, "changed": changed, "chars": chars, "missed": missed,
        "missed_chars": missed_chars / max(1, sum(map(len, docs))),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--traditional", type=Path, nargs="*", default=[], help="extra traditional text files")
    args = parser.parse_args()

    import opencc

    from cpm.pipeline.script import MIN_TRADITIONAL_CHARS, MIN_TRADITIONAL_SHARE, script_table

    t0 = time.process_time()
    script_table()
    print(f"character sets derived from OpenCC in {time.process_time() - t0:.2f} s CPU")
    paragraphs = read_lines("people_daily_1998_paragraphs.txt.zst")
    reviews = read_lines("product_reviews.txt.zst")
    news = grouped(paragraphs)
    s2t, s2twp = opencc.OpenCC("s2t"), opencc.OpenCC("s2twp")
    novel = (SAMPLES / "story" / "水滸傳.big5.txt").read_bytes().decode("cp950")
    chapters = [c.strip() for c in re.split(r"(?=第[一二三四五六七八九十百]+回)", novel) if c.strip()]
    sets = [
        ("People's Daily paragraphs", paragraphs, True),
        ("People's Daily documents", news, True),
        ("product reviews", reviews, True),
        ("水滸傳 (Big5 sample), chapters", chapters, False),
        ("水滸傳 (Big5 sample), paragraphs", [p.strip() for p in novel.splitlines() if p.strip()], False),
        ("People's Daily documents, s2t", [s2t.convert(d) for d in news], False),
        ("People's Daily documents, s2twp", [s2twp.convert(d) for d in news], False),
        ("People's Daily paragraphs, s2t", [s2t.convert(p) for p in paragraphs], False),
        ("product reviews, s2t", [s2t.convert(r) for r in reviews], False),
    ]
    sets += [(path.name, read_traditional(path), False) for path in args.traditional]

    print(f"thresholds: at least {MIN_TRADITIONAL_CHARS} traditional-only characters, traditional share >= "
          f"{MIN_TRADITIONAL_SHARE}; share quantiles over the documents with >= {MIN_TRADITIONAL_CHARS}")
    header = (f"{'set':34} {'docs':>7} {'>=3':>7} {'min':>5} {'p0.1%':>5} {'med':>5} {'p99.9%':>6} {'max':>5} "
              f"{'converted':>9}  result")
    print(header)
    print("-" * len(header))
    t0 = time.process_time()
    total_chars = 0
    for name, docs, simplified in sets:
        row = measure(name, docs, simplified)
        total_chars += sum(map(len, docs))
        result = (f"changed {row['changed']} docs / {row['chars']} chars" if simplified
                  else f"missed {row['missed']} docs ({row['missed_chars']:.2%} of the text)")
        print(f"{name[:34]:34} {row['docs']:>7,} {row['counted']:>7,} {row['min']:>5.2f} {row['p001']:>5.2f} "
              f"{row['median']:>5.2f} {row['p999']:>6.2f} {row['max']:>5.2f} {row['converted']:>9,}  {result}")
    print(f"detection + conversion: {total_chars / 1e6 / (time.process_time() - t0):.1f} M characters per CPU second")


if __name__ == "__main__":
    main()
