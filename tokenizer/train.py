"""``cpm tokenizer train``: a SentencePiece unigram vocabulary from the ``words`` of document shards.

The words are never written to a temporary text file: the shards are streamed batch by
batch, each batch's ``words`` column is counted with Arrow (``value_counts``), and the
trainer receives the distinct words with their counts through ``sentence_iterator`` in
SentencePiece's ``tsv`` input format (``word<TAB>count``). A unigram trainer that splits on
whitespace sees exactly this (it counts whitespace-separated words before EM), so the result
is the CPM-1 recipe without the memory of a joined corpus; ``--sample-sentences N`` caps the
number of documents read (a seeded uniform sample) for corpora that are too large to read whole.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import random
import re
from pathlib import Path
from typing import Any, Iterable, Sequence

from cpm import __version__
from cpm.errors import CpmError
from cpm.tokenizer.model import (
    CONFIG_NAME,
    FORMAT,
    FORMAT_VERSION,
    MARKERS,
    MODEL_NAME,
    MODES,
    NEWLINE_MARK,
    RESERVED,
    SPACE_MARK,
    VOCAB_NAME,
    Tokenizer,
)

log = logging.getLogger(__name__)

DEFAULT_VOCAB_SIZE = 30000
DEFAULT_CHARACTER_COVERAGE = 0.9995
MAX_PIECE_LENGTH = 16
MAX_WORD_BYTES = 4192  # SentencePiece's max_sentence_length: longer "sentences" (words) are skipped


def trainer_options(mode: str, vocab_size: int, character_coverage: float, threads: int) -> dict[str, Any]:
    """The SentencePiece trainer options of the CPM-1 recipe for ``mode``."""
    common: dict[str, Any] = dict(
        model_type="unigram",
        vocab_size=vocab_size,
        character_coverage=character_coverage,
        max_sentencepiece_length=MAX_PIECE_LENGTH,
        max_sentence_length=MAX_WORD_BYTES,
        split_by_whitespace=True,
        input_format="tsv",
        input_sentence_size=0,
        shuffle_input_sentence=False,
        num_threads=threads,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
    )
    if mode == "cpm":
        # CPM-1: NFKC, a dummy "▁" before every word, <eod> a piece matched in text like the original's.
        common.update(
            normalization_rule_name="nmt_nfkc",
            add_dummy_prefix=True,
            remove_extra_whitespaces=True,
            control_symbols=["<sep>", "<pad>", "<mask>"],
            user_defined_symbols=["<eod>", SPACE_MARK, NEWLINE_MARK],
        )
    else:
        # Lossless: no normalisation, no dummy prefix, byte fallback; <eod> is never read from text.
        common.update(
            normalization_rule_name="identity",
            add_dummy_prefix=False,
            remove_extra_whitespaces=False,
            byte_fallback=True,
            control_symbols=["<sep>", "<pad>", "<mask>", "<eod>"],
            user_defined_symbols=[SPACE_MARK, NEWLINE_MARK],
        )
    return common


def _shard_rows(path: Path) -> list[int]:
    from cpm.shards.io import iter_batches

    return [batch.num_rows for batch in iter_batches(path, kind="documents")]


def count_words(
    paths: Sequence[Path], sample_documents: int | None = None, seed: int = 0, progress: bool = True
) -> tuple[dict[str, int], dict[str, int]]:
    """Counts of every word in the shards' ``words`` column (optionally of a seeded sample of documents)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    from tqdm import tqdm

    from cpm.shards.io import iter_batches

    total: int | None = None
    chosen: set[int] | None = None
    if sample_documents is not None:  # a first pass counts the documents to sample from
        total = sum(sum(_shard_rows(path)) for path in paths)
        if 0 < sample_documents < total:
            chosen = set(random.Random(seed).sample(range(total), sample_documents))
    counts: dict[str, int] = {}
    documents = words = 0
    start = 0
    bar = tqdm(total=total, unit="doc", desc="counting words", disable=not progress, leave=False)
    for path in paths:
        for batch in iter_batches(path, kind="documents"):
            n = batch.num_rows
            if chosen is not None:
                keep = [i for i in range(n) if start + i in chosen]
                batch = batch.take(pa.array(keep, type=pa.int64())) if len(keep) < n else batch
            start += n
            bar.update(n)
            if batch.num_rows == 0:
                continue
            documents += batch.num_rows
            values = pc.list_flatten(batch.column("words"))
            words += len(values)
            if len(values) == 0:
                continue
            tally = pc.value_counts(values)
            for word, count in zip(tally.field(0).to_pylist(), tally.field(1).to_pylist()):
                counts[word] = counts.get(word, 0) + count
    bar.close()
    return counts, {"documents_total": start, "documents": documents, "words": words, "distinct_words": len(counts)}


def training_items(counts: dict[str, int], mode: str) -> list[str]:
    """``word<TAB>count`` lines for the trainer: words marked as CPM-1 does, most frequent first.

    Words SentencePiece cannot take as a TSV field (with a tab) and, in lossless mode, words
    with reserved characters (which the encoder writes as bytes) are left out.
    """
    marked: dict[str, int] = {}
    for word, count in counts.items():
        if not word or "\t" in word or (mode == "lossless" and RESERVED.search(word)):
            continue
        key = word.translate(MARKERS)
        if len(key.encode("utf-8")) > MAX_WORD_BYTES:
            continue
        marked[key] = marked.get(key, 0) + count
    return [f"{word}\t{count}" for word, count in sorted(marked.items(), key=lambda kv: (-kv[1], kv[0]))]


_TOO_HIGH = re.compile(r"Vocabulary size too high \((\d+)\)\. Please set it to a value <= (\d+)")
_TOO_LOW = re.compile(r"Vocabulary size is smaller than required_chars\. (\d+) vs (\d+)")


def _training_error(message: str, vocab_size: int, character_coverage: float) -> CpmError:
    if match := _TOO_HIGH.search(message):
        return CpmError(
            f"--vocab-size {vocab_size} is larger than this corpus supports: SentencePiece accepts at most "
            f"{match.group(2)} here; use a smaller --vocab-size or more text"
        )
    if match := _TOO_LOW.search(message):
        return CpmError(
            f"--vocab-size {vocab_size} is too small: the characters needed for --character-coverage "
            f"{character_coverage} and the special pieces take {match.group(2)}; use --vocab-size >= {match.group(2)} "
            f"or a lower --character-coverage"
        )
    return CpmError(f"SentencePiece training failed: {message.strip().splitlines()[-1] if message.strip() else message}")


def _corpus_manifests(inputs: Iterable[str], paths: Sequence[Path]) -> list[dict[str, Any]]:
    """The ``manifest.json`` of each input corpus directory, with its sha256."""
    from cpm.schemas.manifest import MANIFEST_NAME, input_entry

    candidates: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            candidates.append(p / MANIFEST_NAME)
    for path in paths:
        candidates += [path.parent / MANIFEST_NAME, path.parent.parent / MANIFEST_NAME]
    seen: set[Path] = set()
    entries = []
    for candidate in candidates:
        resolved = candidate.resolve()
        if candidate.is_file() and resolved not in seen:
            seen.add(resolved)
            entries.append({**input_entry(candidate), "kind": "manifest"})
    return entries


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def vocab_listing(tok: Tokenizer) -> str:
    """The human-readable vocabulary: ``id<TAB>piece<TAB>type<TAB>score``, pieces JSON-escaped."""
    lines = ["id\tpiece\ttype\tscore"]
    for i in range(tok.vocab_size):
        piece = json.dumps(tok._sp.id_to_piece(i), ensure_ascii=False)[1:-1]
        lines.append(f"{i}\t{piece}\t{tok.piece_type(i)}\t{tok._sp.get_score(i):.6g}")
    return "\n".join(lines) + "\n"


def character_counts(items: Sequence[str], mode: str) -> dict[str, int]:
    """Character frequencies of the training words, as the trainer counts them (after NFKC in cpm mode)."""
    import unicodedata

    chars: dict[str, int] = {}
    for item in items:
        word, _, count = item.rpartition("\t")
        if mode == "cpm":
            word = unicodedata.normalize("NFKC", word)
        n = int(count)
        for ch in word:
            chars[ch] = chars.get(ch, 0) + n
    return chars


def restrict_characters(items: Sequence[str], mode: str, max_characters: int) -> list[str]:
    """The training words made only of the ``max_characters`` most frequent characters.

    Words with rarer characters are left out of training; encoding writes those characters
    as byte pieces (lossless) or ``<unk>`` (cpm), as it does for any character it never saw.
    """
    import unicodedata

    counts = character_counts(items, mode)
    allowed = {ch for ch, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:max_characters]}
    kept = []
    for item in items:
        word = item.rpartition("\t")[0]
        if mode == "cpm":
            word = unicodedata.normalize("NFKC", word)
        if all(ch in allowed for ch in word):
            kept.append(item)
    return kept


def _train_sentencepiece(
    items: Sequence[str], mode: str, vocab_size: int, character_coverage: float | None, threads: int, seed: int, stats: dict
) -> tuple[bytes, dict[str, Any]]:
    """Run the SentencePiece trainer; with the default coverage, shrink the character set until it fits."""
    import sentencepiece as spm

    coverage = character_coverage if character_coverage is not None else DEFAULT_CHARACTER_COVERAGE
    max_characters: int | None = None
    all_items = items
    for _attempt in range(8):
        options = trainer_options(mode, vocab_size, coverage, threads)
        log.info(
            "training a %s unigram vocabulary of %d pieces on %d distinct words (%d words, %d documents), %d thread(s)",
            mode, vocab_size, len(items), stats["words"], stats["documents"], threads,
        )
        spm.set_random_generator_seed(seed)
        model = io.BytesIO()
        try:
            spm.SentencePieceTrainer.train(
                sentence_iterator=iter(items),
                model_writer=model,
                minloglevel=0 if log.isEnabledFor(logging.DEBUG) else 2,
                **options,
            )
            if max_characters is not None:
                options["max_characters"] = max_characters
            return model.getvalue(), options
        except RuntimeError as exc:
            too_low = _TOO_LOW.search(str(exc))
            if character_coverage is not None or too_low is None:
                raise _training_error(str(exc), vocab_size, coverage) from None
            # the vocabulary cannot hold every character the coverage asks for: train on fewer characters
            need = int(too_low.group(2))
            special = len(options["control_symbols"]) + len(options["user_defined_symbols"]) + 3
            special += 256 if mode == "lossless" else 0
            chars_needed = need - special
            target = min(chars_needed - (need - vocab_size) - 1, int((vocab_size - special) * 0.75))
            if max_characters is not None:
                target = min(target, max_characters - 1)
            if target < 1:
                raise _training_error(str(exc), vocab_size, coverage) from None
            log.warning(
                "--vocab-size %d cannot hold the %d characters that character coverage %g needs: training on the "
                "%d most frequent (rarer characters become %s)", vocab_size, chars_needed, coverage, target,
                "byte pieces" if mode == "lossless" else "<unk>",
            )
            max_characters = target
            items = restrict_characters(all_items, mode, max_characters)
            if not items:
                raise _training_error(str(exc), vocab_size, coverage) from None
    raise CpmError(f"--vocab-size {vocab_size}: too small for this corpus; use a larger --vocab-size")


def train_tokenizer(
    inputs: Sequence[str | os.PathLike[str]],
    output: str | os.PathLike[str],
    *,
    vocab_size: int = DEFAULT_VOCAB_SIZE,
    mode: str = "lossless",
    sample_sentences: int | None = None,
    threads: int = 1,
    seed: int = 0,
    character_coverage: float | None = None,
    progress: bool = True,
    command: str = "tokenizer train",
    overwrite: bool = False,
) -> Path:
    """Train a tokenizer on the ``words`` of document shards and write ``output`` (a TOKDIR).

    ``character_coverage`` None means CPM-1's 0.9995; when ``vocab_size`` cannot hold the
    characters that needs (small corpora, small vocabularies), training keeps only the most
    frequent characters (with a warning; ``max_characters`` in the config). An explicit
    coverage is kept as given, or fails. A non-empty ``output`` is refused unless ``overwrite``
    (then replaced atomically). Returns the output directory, holding ``tokenizer.model``, ``cpm_tokenizer.json`` (mode,
    special ids, vocab size, tool version, corpus checksums), ``vocab.tsv`` and ``manifest.json``.
    """
    import sentencepiece as spm  # noqa: F401  (fail early when missing)

    from cpm.shards.io import check_output_dir, resolve_shard_paths, verify_checksums

    _check_options(mode, vocab_size, character_coverage, sample_sentences)
    threads = max(1, int(threads))
    inputs = [str(i) for i in inputs]
    if not inputs:
        raise CpmError("no --input given")
    paths = resolve_shard_paths(inputs)
    check_output_dir(output, overwrite, paths)  # fail before the long work
    verify_checksums(paths)
    log.info("reading words from %d shard(s)", len(paths))
    counts, stats = count_words(paths, sample_sentences, seed, progress)
    items = training_items(counts, mode)
    if not items:
        raise CpmError(f"{', '.join(inputs)}: the corpus has no words to train on ({stats['documents']} documents)")
    model_bytes, options = _train_sentencepiece(items, mode, vocab_size, character_coverage, threads, seed, stats)

    output = Path(output)
    manifests = _corpus_manifests(inputs, paths)
    tok = Tokenizer(model_bytes, mode, str(output))
    corpus = {
        "manifests": [{"path": m["path"], "sha256": m.get("sha256")} for m in manifests],
        "shards": len(paths),
        **stats,
        "sample_sentences": sample_sentences,
        "training_words_sha256": _items_sha256(items),
    }
    config = _tokenizer_config(tok, options, seed, threads, corpus)
    _write_tokenizer_dir(output, overwrite, model_bytes, tok, config, command, manifests, paths,
                         {**stats, "training_items": len(items), "pieces": tok.vocab_size})
    log.info("wrote %s (%s mode, %d pieces)", output, mode, tok.vocab_size)
    return output


def _items_sha256(items: list[str]) -> str:
    digest = hashlib.sha256()
    for item in items:
        digest.update(item.encode("utf-8", "surrogatepass") + b"\n")
    return digest.hexdigest()


def _tokenizer_config(tok: Tokenizer, options: dict[str, Any], seed: int, threads: int, corpus: dict[str, Any]) -> dict[str, Any]:
    """``cpm_tokenizer.json``: the format, the tools, the mode and special ids, the trainer's options, the corpus."""
    import sentencepiece as spm

    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "tool": "cpm",
        "tool_version": __version__,
        "sentencepiece_version": spm.__version__,
        "mode": tok.mode,
        "vocab_size": tok.vocab_size,
        "model_file": MODEL_NAME,
        "model_sha256": tok.fingerprint,
        "special_ids": tok.special_ids(),
        "segmenter": "jieba 0.42.1 (cut, HMM on)",
        "trainer": {k: v for k, v in options.items() if k != "num_threads"} | {"seed": seed, "threads": threads},
        "corpus": corpus,
    }


def _check_options(mode: str, vocab_size: int, character_coverage: float | None, sample_sentences: int | None) -> None:
    if mode not in MODES:
        raise CpmError(f"--mode {mode!r}: expected one of {', '.join(MODES)}")
    if vocab_size < 16:
        raise CpmError(f"--vocab-size {vocab_size}: too small for a tokenizer (at least a few thousand is usual)")
    if character_coverage is not None and not 0 < character_coverage <= 1:
        raise CpmError(f"--character-coverage {character_coverage}: must be in (0, 1]")
    if sample_sentences is not None and sample_sentences <= 0:
        raise CpmError(f"--sample-sentences {sample_sentences}: must be positive")


def _write_tokenizer_dir(output: Path, overwrite: bool, model_bytes: bytes, tok: Tokenizer, config: dict[str, Any],
                         command: str, manifests: list[dict[str, Any]], paths: list[str], counters: dict[str, Any]) -> None:
    """The TOKDIR, atomically: the model, ``vocab.tsv``, ``cpm_tokenizer.json`` and ``manifest.json``."""
    from cpm.schemas.manifest import input_entry, new_manifest, write_manifest
    from cpm.shards.io import atomic_output_dir

    with atomic_output_dir(output, overwrite, paths) as work:
        _write_atomic(work / MODEL_NAME, model_bytes)
        _write_atomic(work / VOCAB_NAME, vocab_listing(tok).encode("utf-8"))
        _write_atomic(work / CONFIG_NAME, (json.dumps(config, ensure_ascii=False, indent=2) + "\n").encode("utf-8"))

        manifest = new_manifest("tokenizer", command, {k: config[k] for k in ("mode", "vocab_size", "special_ids", "trainer")})
        manifest["inputs"] = manifests + [{**input_entry(p, checksum=not manifests), "kind": "documents"} for p in paths]
        manifest["counters"] = counters
        manifest["shards"] = [
            {"path": name, "rows": rows, "bytes": (work / name).stat().st_size, "sha256": _sha256_file(work / name), "kind": kind}
            for name, rows, kind in ((MODEL_NAME, tok.vocab_size, "sentencepiece-model"), (VOCAB_NAME, tok.vocab_size, "vocab-listing"))
        ]
        write_manifest(work, manifest)


def _sha256_file(path: Path) -> str:
    from cpm.schemas.manifest import sha256_file

    return sha256_file(path)

