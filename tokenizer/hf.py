"""The cpm tokenizer for Hugging Face transformers: ``AutoTokenizer.from_pretrained(folder, trust_remote_code=True)``.

``cpm export hf`` copies this file into the exported folder as ``tokenization_cpm.py`` and names
``CpmJiebaTokenizer`` in ``tokenizer_config.json`` (``auto_map``), so the folder loads without cpm
installed: this module needs only ``transformers``, ``sentencepiece`` and ``jieba`` 0.42.1 (cpm's exact
faster segmenter is used instead of ``jieba.lcut`` when cpm is importable; both give the same words).

It encodes and decodes exactly as :class:`cpm.tokenizer.Tokenizer` in both modes (``mode`` in
``tokenizer_config.json``):

* ``tokenizer(text, add_special_tokens=False).input_ids == Tokenizer.encode(text)``; with special tokens
  (the default) ``<eod>`` comes first, as every document starts in cpm's training data and as
  ``cpm generate`` starts every prompt;
* ``tokenizer.decode(ids) == Tokenizer.decode(ids)`` (``skip_special_tokens=True`` drops the special ids).

Text is never split on special-token strings: ``"<eod>"`` written in a text is ordinary characters, as in cpm.
"""

from __future__ import annotations

import os
import re
import shutil
from typing import Any

import sentencepiece as spm
from transformers import PreTrainedTokenizer

SPACE_MARK = "\u2582"  # CPM-1's marker for " "
NEWLINE_MARK = "\u2583"  # CPM-1's marker for "\n"
MARKERS = str.maketrans({" ": SPACE_MARK, "\n": NEWLINE_MARK})
# lossless mode: characters written as UTF-8 byte pieces, never given to SentencePiece
RESERVED = re.compile("([\u2581\u2582\u2583\ud800-\udfff])")
MODES = ("lossless", "cpm")


def _segmenter():
    """jieba's accurate-mode cut (HMM on): cpm's exact fast version when cpm is importable, else jieba's own."""
    try:
        from cpm.tokenizer.segment import cut

        return cut
    except ImportError:
        import jieba

        return lambda text: jieba.lcut(text, cut_all=False, HMM=True)


class CpmJiebaTokenizer(PreTrainedTokenizer):
    """jieba words, then cpm's SentencePiece unigram vocabulary with its space/newline markers."""

    vocab_files_names = {"vocab_file": "cpm_sentencepiece.model"}  # not "tokenizer.model": no fast converter may pick it up
    model_input_names = ["input_ids", "attention_mask"]

    def __init__(
        self,
        vocab_file: str,
        mode: str = "lossless",
        bos_token: str = "<eod>",
        eos_token: str = "<eod>",
        unk_token: str = "<unk>",
        pad_token: str = "<pad>",
        sep_token: str = "<sep>",
        mask_token: str = "<mask>",
        **kwargs: Any,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"{vocab_file}: unknown cpm tokenizer mode {mode!r} (expected one of {', '.join(MODES)})")
        self.vocab_file = vocab_file
        self.mode = mode
        self.sp = spm.SentencePieceProcessor(model_file=vocab_file)
        self._cut = _segmenter()
        self._id_bytes = [self._piece_bytes(i) for i in range(self.sp.get_piece_size())] if mode == "lossless" else None
        kwargs.setdefault("clean_up_tokenization_spaces", False)
        kwargs["split_special_tokens"] = True
        super().__init__(
            bos_token=bos_token, eos_token=eos_token, unk_token=unk_token, pad_token=pad_token,
            sep_token=sep_token, mask_token=mask_token, mode=mode, **kwargs,
        )

    # -- vocabulary --------------------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        return self.sp.get_piece_size()

    def get_vocab(self) -> dict[str, int]:
        return {self.sp.id_to_piece(i): i for i in range(self.vocab_size)}

    def __len__(self) -> int:
        return self.vocab_size

    def _convert_token_to_id(self, token: str) -> int:
        return self.sp.piece_to_id(token)

    def _convert_id_to_token(self, index: int) -> str:
        return self.sp.id_to_piece(int(index))

    # -- encoding ------------------------------------------------------------------------------

    def _word_pieces(self, word: str) -> list[str]:
        """Lossless mode: one word's pieces (reserved characters as their UTF-8 byte pieces)."""
        pieces: list[str] = []
        for part in RESERVED.split(word):
            if not part:
                continue
            if RESERVED.fullmatch(part):
                pieces += [f"<0x{b:02X}>" for b in part.encode("utf-8", "surrogatepass")]
            else:
                pieces += self.sp.encode(part.translate(MARKERS), out_type=str)
        return pieces

    def tokenize(self, text: str, **kwargs: Any) -> list[str]:
        """The SentencePiece pieces of ``text``, exactly as cpm encodes it (special-token strings are plain text)."""
        words = self._cut(text)
        if self.mode == "cpm":
            return self.sp.encode(" ".join(word.translate(MARKERS) for word in words), out_type=str)
        return [piece for word in words for piece in self._word_pieces(word)]

    def _tokenize(self, text: str, **kwargs: Any) -> list[str]:
        return self.tokenize(text)

    def build_inputs_with_special_tokens(self, token_ids_0: list[int], token_ids_1: list[int] | None = None) -> list[int]:
        """``<eod>`` before the text (and before a second text), as documents start in cpm's training data."""
        ids = [self.eos_token_id] + token_ids_0
        return ids if token_ids_1 is None else ids + [self.eos_token_id] + token_ids_1

    def get_special_tokens_mask(
        self, token_ids_0: list[int], token_ids_1: list[int] | None = None, already_has_special_tokens: bool = False
    ) -> list[int]:
        if already_has_special_tokens:
            special = set(self.all_special_ids)
            return [int(i in special) for i in token_ids_0]
        mask = [1] + [0] * len(token_ids_0)
        return mask if token_ids_1 is None else mask + [1] + [0] * len(token_ids_1)

    def create_token_type_ids_from_sequences(self, token_ids_0: list[int], token_ids_1: list[int] | None = None) -> list[int]:
        return [0] * len(self.build_inputs_with_special_tokens(token_ids_0, token_ids_1))

    # -- decoding ------------------------------------------------------------------------------

    def _piece_bytes(self, i: int) -> bytes:
        sp = self.sp
        if sp.is_byte(i):
            return bytes([int(sp.id_to_piece(i)[3:5], 16)])
        if sp.is_control(i) or sp.is_unused(i):
            return b""
        if sp.is_unknown(i):
            return "\ufffd".encode()
        return sp.id_to_piece(i).replace(SPACE_MARK, " ").replace(NEWLINE_MARK, "\n").encode("utf-8")

    def _decode(self, token_ids: Any, skip_special_tokens: bool = False, **kwargs: Any) -> str:
        ids = [int(token_ids)] if isinstance(token_ids, int) else [int(i) for i in token_ids]
        bad = [i for i in ids if not 0 <= i < self.vocab_size]
        if bad:
            raise ValueError(f"token id {bad[0]} is out of range for a vocabulary of {self.vocab_size}")
        if skip_special_tokens:
            special = set(self.all_special_ids)
            ids = [i for i in ids if i not in special]
        if self.mode == "cpm":
            text = self.sp.decode(ids)
            return text.replace(" ", "").replace(SPACE_MARK, " ").replace(NEWLINE_MARK, "\n")
        data = b"".join([self._id_bytes[i] for i in ids])
        try:
            return data.decode("utf-8", "surrogatepass")
        except UnicodeDecodeError:  # ids that no encode produced: split bytes
            return data.decode("utf-8", "replace")

    def convert_tokens_to_string(self, tokens: list[str]) -> str:
        return self._decode([self.sp.piece_to_id(t) for t in tokens])

    # -- saving --------------------------------------------------------------------------------

    def save_vocabulary(self, save_directory: str, filename_prefix: str | None = None) -> tuple[str]:
        name = (filename_prefix + "-" if filename_prefix else "") + self.vocab_files_names["vocab_file"]
        target = os.path.join(save_directory, name)
        if os.path.abspath(self.vocab_file) != os.path.abspath(target):
            shutil.copyfile(self.vocab_file, target)
        return (target,)
