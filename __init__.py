"""cpm: raw Chinese text to a trained CPM-style GPT.

Sub-packages, each importing only the ones before it: :mod:`cpm.schemas` (every Arrow schema
and manifest format), :mod:`cpm.shards` (reading, writing and inspecting Arrow shards, sequence
shards included), :mod:`cpm.tokenizer` (reversible SentencePiece unigram vocabulary),
:mod:`cpm.pipeline` (Beam corpus jobs) and :mod:`cpm.data` (packing, the Megatron export),
:mod:`cpm.trainer` (tensor-parallel GPT), and the command line (:mod:`cpm.cli`).
"""

__version__ = "0.1.0"
