"""Loading and serving a tokenizer: :class:`Tokenizer` (see :mod:`cpm.tokenizer` for the design).

Nothing heavy is imported at module level; SentencePiece is imported by :meth:`Tokenizer.load`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import threading
from array import array
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterable, Sequence

from cpm import __version__
from cpm.errors import CpmError

MODES = ("lossless", "cpm")
CONFIG_NAME = "cpm_tokenizer.json"
LEGACY_CONFIG_NAME = "tokenizer.json"  # the name older outputs used (Hugging Face's name too); still read
MODEL_NAME = "tokenizer.model"
VOCAB_NAME = "vocab.tsv"
FORMAT = "cpm-tokenizer"
FORMAT_VERSION = 1

SP_SPACE = "\u2581"  # SentencePiece's own whitespace symbol
SPACE_MARK = "\u2582"  # CPM-1's marker for " "
NEWLINE_MARK = "\u2583"  # CPM-1's marker for "\n"

# CPM-1: each word's " " and "\n" become the markers before SentencePiece sees it.
MARKERS = str.maketrans({" ": SPACE_MARK, "\n": NEWLINE_MARK})
# Lossless mode: characters that never reach SentencePiece and are written as UTF-8 byte
# pieces instead: the three marker-like block characters (so that a marker piece always
# means a space or newline) and lone surrogates (not encodable as UTF-8 text).
RESERVED = re.compile("([\u2581\u2582\u2583\ud800-\udfff])")

_JOIN = "\x1f"  # a temporary word separator (see Tokenizer._cpm_join)
_CACHE_LIMIT = 1 << 20  # words whose ids are remembered (cleared when full)
_MIN_FORK_ITEMS = 256  # batches at least this long are encoded by forked processes when threads > 1
_FORK_LOCK = threading.Lock()
_FORK_JOB: tuple[Any, Sequence] | None = None  # (function, items) inherited by forked workers


def _fork_run(bounds: tuple[int, int]) -> tuple[array, array]:
    """In a forked worker: encode ``items[start:end]``, sent back as two flat arrays (cheap to pickle)."""
    function, items = _FORK_JOB  # type: ignore[misc]
    flat, lengths = array("l"), array("l")
    for ids in function(items[bounds[0] : bounds[1]]):
        flat.extend(ids)
        lengths.append(len(ids))
    return flat, lengths


def _unflatten(flat: array, lengths: array) -> list[list[int]]:
    values, out, start = flat.tolist(), [], 0
    for n in lengths:
        out.append(values[start : start + n])
        start += n
    return out


def _can_fork() -> bool:
    import multiprocessing as mp

    return sys.platform != "win32" and "fork" in mp.get_all_start_methods() and not mp.current_process().daemon


def _sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def config_path(directory: Path) -> Path | None:
    """A tokenizer directory's config file: ``cpm_tokenizer.json``, or ``tokenizer.json`` in older outputs."""
    for name in (CONFIG_NAME, LEGACY_CONFIG_NAME):
        if (directory / name).is_file():
            return directory / name
    return None


def _read_config(directory: Path) -> dict[str, Any]:
    path = config_path(directory)
    if path is None:
        raise CpmError(f"{directory}: not a tokenizer directory (no {CONFIG_NAME}; train one with 'cpm tokenizer train')")
    try:
        config = json.loads(path.read_text("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CpmError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise CpmError(f"{path}: not a cpm tokenizer config (no \"format\": \"{FORMAT}\")")
    version = config.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CpmError(
            f"{path}: tokenizer format version {version} was written by cpm {config.get('tool_version', '?')}, "
            f"newer than this cpm {__version__} (reads format version {FORMAT_VERSION}); upgrade cpm"
        )
    if config.get("mode") not in MODES:
        raise CpmError(f"{path}: unknown mode {config.get('mode')!r} (expected one of {', '.join(MODES)})")
    return config


def model_mode(model_proto: bytes, where: str = "model") -> str:
    """The mode a bare SentencePiece model was trained for, read from the model itself.

    ``cpm tokenizer train --mode lossless`` writes the 256 byte pieces (byte fallback) and
    ``<eod>`` as a control symbol; CPM-1's vocabulary and ``--mode cpm`` have no byte pieces and
    ``<eod>`` as an ordinary (user-defined) piece. Loading a lossless ``tokenizer.model`` copied
    out of its directory in cpm mode would decode wrongly, so such a model loads as lossless.
    """
    import sentencepiece as spm

    try:
        sp = spm.SentencePieceProcessor(model_proto=model_proto)
    except (RuntimeError, OSError) as exc:
        raise CpmError(f"{where}: not a SentencePiece model (corrupted or truncated?): {exc}") from None
    byte0, eod = sp.piece_to_id("<0x00>"), sp.piece_to_id("<eod>")
    has_bytes = sp.id_to_piece(byte0) == "<0x00>" and sp.is_byte(byte0)
    eod_control = sp.id_to_piece(eod) == "<eod>" and sp.is_control(eod)
    return "lossless" if has_bytes and eod_control else "cpm"


class Tokenizer:
    """A CPM-style tokenizer: jieba words, then a SentencePiece unigram vocabulary.

    ``mode`` is ``"cpm"`` (bit-for-bit the original CPM-1 algorithm, lossy) or
    ``"lossless"`` (``decode(encode(s)) == s`` for every string). Instances are
    thread-safe; use :meth:`load` to make one.
    """

    def __init__(self, model_proto: bytes, mode: str, path: str | None = None, config: dict[str, Any] | None = None):
        import sentencepiece as spm

        if mode not in MODES:
            raise CpmError(f"unknown tokenizer mode {mode!r} (expected one of {', '.join(MODES)})")
        try:
            self._sp = spm.SentencePieceProcessor(model_proto=model_proto)
        except (RuntimeError, OSError) as exc:
            where = path or "model"
            raise CpmError(f"{where}: not a SentencePiece model (corrupted or truncated?): {exc}") from None
        self.mode = mode
        self.path = path
        self.config = dict(config or {})
        self._model_proto = model_proto
        self.fingerprint = _sha256_bytes(model_proto)
        self.vocab_size: int = self._sp.vocab_size()
        self.unk_id: int = self._sp.unk_id()
        self.eod_id: int = self._special_id("<eod>")
        self.pad_id: int = self._special_id("<pad>")
        self.sep_id: int = self._special_id("<sep>")
        self.mask_id: int = self._special_id("<mask>")
        self._cache: dict[str, list[int]] = {}
        if mode == "lossless":
            self._byte_ids = [self._sp.piece_to_id(f"<0x{b:02X}>") for b in range(256)]
            if any(self._sp.id_to_piece(i) != f"<0x{b:02X}>" for b, i in enumerate(self._byte_ids)):
                raise CpmError(f"{path or 'model'}: a lossless tokenizer needs the 256 byte pieces (byte_fallback)")
            self._id_bytes = [self._piece_bytes(i) for i in range(self.vocab_size)]

    def _special_id(self, piece: str) -> int:
        i = self._sp.piece_to_id(piece)
        if i == self._sp.unk_id() or self._sp.id_to_piece(i) != piece:
            where = self.path or "model"
            raise CpmError(f"{where}: the vocabulary has no {piece} piece (not a CPM tokenizer?)")
        return i

    def _piece_bytes(self, i: int) -> bytes:
        sp = self._sp
        if sp.is_byte(i):
            return bytes([int(sp.id_to_piece(i)[3:5], 16)])
        if sp.is_control(i) or sp.is_unused(i):
            return b""
        if sp.is_unknown(i):
            return "\ufffd".encode()
        return sp.id_to_piece(i).replace(SPACE_MARK, " ").replace(NEWLINE_MARK, "\n").encode("utf-8")

    # -- loading -------------------------------------------------------------------------

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> "Tokenizer":
        """Load a trained tokenizer directory (``cpm tokenizer train``) or a ``.model`` file.

        A bare ``.model`` file loads in cpm mode (CPM-1's ``chinese_vocab.model``), unless it is a
        lossless model from ``cpm tokenizer train`` (see :func:`model_mode`).
        """
        path = Path(path)
        if path.is_dir():
            config = _read_config(path)
            model_path = path / config.get("model_file", MODEL_NAME)
            model = cls._read_model(model_path)
            expected = config.get("model_sha256")
            if expected and _sha256_bytes(model) != expected:
                raise CpmError(f"{model_path}: checksum does not match {config_path(path)} (corrupted or replaced?)")
            tok = cls(model, config["mode"], str(path), config)
            if config.get("vocab_size") not in (None, tok.vocab_size):
                raise CpmError(f"{config_path(path)}: vocab_size {config['vocab_size']} but the model has {tok.vocab_size}")
            return tok
        if path.is_file() and config_path(path.parent) is not None:
            config = _read_config(path.parent)
            if config.get("model_file", MODEL_NAME) == path.name:
                return cls.load(path.parent)
        model = cls._read_model(path)
        mode = model_mode(model, str(path))
        return cls(model, mode, str(path), {"mode": mode, "source": str(path)})

    @staticmethod
    def _read_model(path: Path) -> bytes:
        if not path.is_file():
            raise CpmError(f"{path}: no such tokenizer (expected a directory from 'cpm tokenizer train' or a .model file)")
        data = path.read_bytes()
        if not data:
            raise CpmError(f"{path}: empty model file")
        return data

    # -- encoding ------------------------------------------------------------------------

    def _word_ids(self, word: str) -> list[int]:
        """Lossless mode: the ids of one word (SentencePiece on the marked word, reserved characters as bytes)."""
        if RESERVED.search(word) is None:
            return self._sp.encode(word.translate(MARKERS))
        ids: list[int] = []
        for part in RESERVED.split(word):
            if not part:
                continue
            if len(part) == 1 and RESERVED.fullmatch(part):
                ids.extend(self._byte_ids[b] for b in part.encode("utf-8", "surrogatepass"))
            else:
                ids.extend(self._sp.encode(part.translate(MARKERS)))
        return ids

    @staticmethod
    def _cpm_join(words: Iterable[str]) -> str:
        """CPM-1's SentencePiece input: marked words joined by one space.

        Joined with U+001F first and marked with three C-speed ``str.replace`` calls, unless a
        word itself holds U+001F (then word by word).
        """
        words = words if isinstance(words, list) else list(words)
        joined = _JOIN.join(words)
        if joined.count(_JOIN) != max(len(words) - 1, 0):
            return " ".join([word.translate(MARKERS) for word in words])
        return joined.replace(" ", SPACE_MARK).replace("\n", NEWLINE_MARK).replace(_JOIN, " ")

    def encode_words(self, words: Iterable[str]) -> list[int]:
        """Ids of already segmented text: equals ``encode("".join(words))`` when ``words`` is its jieba cut."""
        if self.mode == "cpm":
            # one SentencePiece call on the joined text, exactly as CPM-1: per-word ids are *not*
            # always the same (equal-score paths are broken by float rounding of the running sum)
            return self._sp.encode(self._cpm_join(words))
        cache = self._cache
        out: list[int] = []
        for word in words:
            ids = cache.get(word)
            if ids is None:
                ids = self._word_ids(word)
                if len(cache) >= _CACHE_LIMIT:
                    cache.clear()
                cache[word] = ids
            out += ids
        return out

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``."""
        from cpm.tokenizer.segment import cut

        return self.encode_words(cut(text))

    def _encode_words_chunk(self, word_lists: Sequence[Sequence[str]]) -> list[list[int]]:
        if self.mode == "cpm":
            return self._sp.encode([self._cpm_join(words) for words in word_lists])
        return [self.encode_words(words) for words in word_lists]

    def _encode_chunk(self, texts: Sequence[str]) -> list[list[int]]:
        from cpm.tokenizer.segment import cut_batch

        return self._encode_words_chunk(cut_batch(list(texts)))

    @staticmethod
    def _parallel(function, items: Sequence, threads: int) -> list:
        """``function(items)`` split over ``threads`` workers: forked processes for long batches, else threads.

        Segmentation holds the GIL, so threads only overlap SentencePiece; forked workers
        inherit the loaded models copy-on-write and send back only the ids.
        """
        threads = max(1, int(threads or 1))
        if threads == 1 or len(items) < 2:
            return function(items)
        size = max(1, -(-len(items) // (threads * 4)))
        bounds = [(i, min(i + size, len(items))) for i in range(0, len(items), size)]
        if len(items) >= _MIN_FORK_ITEMS and _can_fork():
            import multiprocessing as mp

            global _FORK_JOB
            with _FORK_LOCK:
                _FORK_JOB = (function, items)
                try:
                    with mp.get_context("fork").Pool(threads) as pool:
                        parts = [_unflatten(*part) for part in pool.imap(_fork_run, bounds)]
                finally:
                    _FORK_JOB = None
        else:
            with ThreadPoolExecutor(threads) as pool:
                parts = list(pool.map(lambda b: function(items[b[0] : b[1]]), bounds))
        return [ids for part in parts for ids in part]

    def encode_batch(self, texts: Sequence[str], threads: int = 1) -> list[list[int]]:
        """:meth:`encode` for many texts with ``threads`` parallel workers (see :meth:`_parallel`)."""
        from cpm.tokenizer.segment import cut

        cut("\u9884\u70ed")  # build the segmenter once here, not in every worker
        return self._parallel(self._encode_chunk, list(texts), threads)

    def encode_words_batch(self, word_lists: Sequence[Sequence[str]], threads: int = 1) -> list[list[int]]:
        """:meth:`encode_words` for many segmented texts, with ``threads`` parallel workers."""
        return self._parallel(self._encode_words_chunk, list(word_lists), threads)

    def __reduce__(self):
        return (Tokenizer, (self._model_proto, self.mode, self.path, self.config))

    def tokenize(self, text: str) -> list[str]:
        """The pieces of ``text`` (SentencePiece spelling: ``▁`` word start in cpm mode, ``<0xXX>`` bytes)."""
        return [self._sp.id_to_piece(i) for i in self.encode(text)]

    # -- decoding ------------------------------------------------------------------------

    def _check_ids(self, ids: Sequence[int]) -> list[int]:
        ids = [int(i) for i in ids]
        if ids and (min(ids) < 0 or max(ids) >= self.vocab_size):
            bad = next(i for i in ids if i < 0 or i >= self.vocab_size)
            raise CpmError(f"token id {bad} is out of range for a vocabulary of {self.vocab_size} (0..{self.vocab_size - 1})")
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        """Text of token ids. Control pieces (``<pad>``, ...) decode to nothing; in cpm mode ``<eod>`` is ``"<eod>"`` as in CPM-1."""
        ids = self._check_ids(ids)
        if self.mode == "cpm":
            text = self._sp.decode(ids)
            return text.replace(" ", "").replace(SPACE_MARK, " ").replace(NEWLINE_MARK, "\n")
        table = self._id_bytes
        data = b"".join([table[i] for i in ids])
        try:
            return data.decode("utf-8", "surrogatepass")
        except UnicodeDecodeError:  # ids that no encode produced: split bytes
            return data.decode("utf-8", "replace")

    def decode_batch(self, id_lists: Sequence[Sequence[int]]) -> list[str]:
        """:meth:`decode` for many id lists."""
        return [self.decode(ids) for ids in id_lists]

    # -- vocabulary ----------------------------------------------------------------------

    def id_to_piece(self, i: int) -> str:
        return self._sp.id_to_piece(self._check_ids([i])[0])

    def piece_to_id(self, piece: str) -> int:
        return self._sp.piece_to_id(piece)

    def piece_type(self, i: int) -> str:
        """``normal`` (including user-defined), ``control``, ``unknown``, ``byte`` or ``unused`` for an id."""
        sp = self._sp
        if sp.is_control(i):
            return "control"
        if sp.is_unknown(i):
            return "unknown"
        if sp.is_byte(i):
            return "byte"
        if sp.is_unused(i):
            return "unused"
        return "normal"

    def special_ids(self) -> dict[str, int]:
        return {"unk": self.unk_id, "sep": self.sep_id, "pad": self.pad_id, "mask": self.mask_id, "eod": self.eod_id}

    def __repr__(self) -> str:
        return f"Tokenizer(mode={self.mode!r}, vocab_size={self.vocab_size}, path={self.path!r})"
