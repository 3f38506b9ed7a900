"""PII masking (the ``pii_masking`` cleaning step): recall, precision and CPU cost.

* Recall, per label and per kind of line, on ``tests/data/pii_contact_lines.jsonl`` (written by
  ``bench/make_pii_set.py``): a labelled value counts as caught when every character of it
  lies inside a masked span. Masks that touch no labelled value are false positives (the set
  has negative lines: dates, amounts, statistics, order/invoice/tracking numbers, postcodes).
* Precision on real text: every mask made on the shared People's Daily paragraphs and product
  reviews is listed with its context (``--show``), so each can be checked by eye; the People's
  Daily text (1998 news: dates, amounts, statistics) should get none but real contact numbers.
* CPU seconds per MB of :func:`cpm.pipeline.pii.mask_pii` on both corpora, against the
  previous single-regex masker measured in the same run.

Usage: python bench/bench_pii.py [--show] [--data tests/data/pii_contact_lines.jsonl]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from shared_corpora import read_lines  # noqa: E402

# the masker before width normalisation, context rules and checksums (the baseline)
_OLD_RE = re.compile(
    "|".join(
        [
            r"(?P<EMAIL>[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,})",
            r"(?P<ID>(?<![0-9A-Za-z])[1-9][0-9]{5}(?:18|19|20)[0-9]{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12][0-9]|3[01])[0-9]{3}[0-9Xx](?![0-9A-Za-z]))",
            r"(?P<IP>(?<![0-9.])(?:(?:25[0-5]|2[0-4][0-9]|1?[0-9]?[0-9])\.){3}(?:25[0-5]|2[0-4][0-9]|1?[0-9]?[0-9])(?![0-9.]))",
            r"(?P<PHONE>(?<![0-9])(?:(?:\+|00)86[- ]?)?1[3-9][0-9][- ]?[0-9]{4}[- ]?[0-9]{4}(?![0-9])|(?<![0-9])0[0-9]{2,3}-[0-9]{7,8}(?![0-9]))",
        ]
    )
)
_OLD_HINT_RE = re.compile(r"[@0-9](?:(?<=@)|[0-9]{6}|[.-][0-9])")


def old_spans(text: str) -> list[tuple[int, int, str]]:
    if _OLD_HINT_RE.search(text) is None:
        return []
    return [(m.start(), m.end(), m.lastgroup) for m in _OLD_RE.finditer(text)]


def new_spans(text: str) -> list[tuple[int, int, str]]:
    from cpm.pipeline.pii import pii_spans

    return [tuple(s) for s in pii_spans(text)]



def score(rows: list[dict], spans_of) -> dict:
    """Recall per label/kind, misses and false positives of ``spans_of`` on the labelled rows."""
    caught, total, misses, false_pos = Counter(), Counter(), [], []
    for row in rows:
        text = row["text"]
        spans = spans_of(text)
        covered = {i for start, end, _ in spans for i in range(start, end)}
        labelled, pos = set(), 0
        for item in row["pii"]:
            start = text.index(item["value"], pos)
            pos = start + len(item["value"])
            chars = set(range(start, pos))
            labelled |= chars
            for key in (item["label"], row["kind"], "all"):
                total[key] += 1
                caught[key] += chars <= covered
            if not chars <= covered:
                misses.append((item["label"], item["value"], text))
        false_pos += [(text[s:e], text) for s, e, _ in spans if not set(range(s, e)) & labelled]
    return {"caught": caught, "total": total, "misses": misses, "false_pos": false_pos}


def corpus_masks(lines: list[str], spans_of) -> tuple[list[tuple[str, str, str]], float]:
    """Every mask made on ``lines`` (label, value, context) and the CPU seconds it took."""
    t0 = time.process_time()
    found = [(i, spans_of(line)) for i, line in enumerate(lines)]
    cpu = time.process_time() - t0
    masks = [(label, lines[i][s:e], lines[i][max(0, s - 15) : e + 10]) for i, spans in found for s, e, label in spans]
    return masks, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT / "tests" / "data" / "pii_contact_lines.jsonl")
    parser.add_argument("--show", action="store_true", help="list every mask made on the corpora, and every miss")
    args = parser.parse_args()

    rows = [json.loads(line) for line in args.data.read_text("utf-8").splitlines() if line.strip()]
    print(f"labelled set: {len(rows)} lines, {sum(len(r['pii']) for r in rows)} values ({args.data.name})\n")
    results = {"before": score(rows, old_spans), "after": score(rows, new_spans)}
    keys = sorted({k for r in results.values() for k in r["total"]}, key=lambda k: (k == "all", k))
    print(f"{'recall':42} {'values':>6} {'before':>8} {'after':>8}")
    for key in keys:
        total = results["after"]["total"][key]
        cells = [f"{results[w]['caught'][key] / total:8.1%}" for w in ("before", "after")]
        print(f"{key[:42]:42} {total:>6} {cells[0]} {cells[1]}")
    for which in ("before", "after"):
        print(f"false positives on the labelled set ({which}): {len(results[which]['false_pos'])}")
    if args.show:
        print("\nmissed (after):")
        for label, value, text in results["after"]["misses"]:
            print(f"  {label:6} {value!r:32} in {text}")
        for value, text in results["after"]["false_pos"]:
            print(f"  FALSE  {value!r:32} in {text}")

    print(f"\n{'corpus':28} {'MB':>6} {'masks before':>13} {'masks after':>12} {'CPU s/MB before':>16} {'after':>7}")
    for name in ("people_daily_1998_paragraphs.txt.zst", "product_reviews.txt.zst"):
        lines = read_lines(name)
        mb = sum(len(line.encode()) for line in lines) / 1e6
        new_spans("预热 13812345678")
        before, cpu_before = corpus_masks(lines, old_spans)
        after, cpu_after = corpus_masks(lines, new_spans)
        print(f"{name.split('.')[0]:28} {mb:6.2f} {len(before):>13} {len(after):>12} {cpu_before / mb:>16.4f} {cpu_after / mb:>7.4f}")
        if args.show:
            for label, value, context in after:
                print(f"  {label:6} {value!r:28} …{context}…")


if __name__ == "__main__":
    main()
