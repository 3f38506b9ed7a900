"""The single source of truth for every on-disk format cpm writes.

* document shards (:func:`document_schema`): one row per cleaned, segmented document;
* rejected shards (:func:`rejected_schema`): every input record a job dropped, with its rule;
* sequence shards (:func:`sequence_schema`): fixed-length token samples cut from the
  ``<eod>``-joined document stream;
* ``manifest.json`` (:mod:`cpm.schemas.manifest`), carried by every output directory.

Every Arrow schema carries ``cpm.kind`` and ``cpm.schema_version`` in its metadata, and
:func:`validate_schema` is what every stage calls when it reads or writes a shard.
"""

from __future__ import annotations

import pyarrow as pa

from cpm.errors import ShardError

SCHEMA_VERSION = 1
SOURCES = ("encyclopedia", "webpage", "story", "news", "dialog")

KIND_KEY = b"cpm.kind"
VERSION_KEY = b"cpm.schema_version"


def _with_kind(fields: list[pa.Field], kind: str, extra: dict[str, str] | None = None) -> pa.Schema:
    meta = {KIND_KEY: kind.encode(), VERSION_KEY: str(SCHEMA_VERSION).encode()}
    for key, value in (extra or {}).items():
        meta[f"cpm.{key}".encode()] = str(value).encode()
    return pa.schema(fields, metadata=meta)


def document_schema() -> pa.Schema:
    """Schema of a document shard (``shards/part-NNNNN.arrow`` of ``cpm corpus build``)."""
    return _with_kind(
        [
            pa.field("id", pa.string(), nullable=False),  # stable, unique; the input record's own id when it has one
            pa.field("source", pa.string(), nullable=False),  # one of SOURCES
            pa.field("text", pa.large_string(), nullable=False),  # cleaned text, paragraphs separated by "\n"
            pa.field("words", pa.list_(pa.string()), nullable=False),  # exactly jieba.cut(text), HMM on
            pa.field("title", pa.string()),
            pa.field("url", pa.string()),
            pa.field("date", pa.string()),  # as given by the source (ISO 8601 where it is known)
            pa.field("meta", pa.string(), nullable=False),  # JSON object of source-specific fields, "{}" if none
            pa.field("num_chars", pa.int32(), nullable=False),
            pa.field("num_words", pa.int32(), nullable=False),
            pa.field("cjk_ratio", pa.float32(), nullable=False),  # CJK ideographs / non-space characters
            pa.field("dup_cluster_size", pa.int32(), nullable=False),  # 1 = unique; n = survivor of n near-duplicates
            pa.field("origin", pa.string(), nullable=False),  # "input-path:line" of the record it came from
        ],
        "documents",
    )


def rejected_schema() -> pa.Schema:
    """Schema of a rejected shard (``rejected/part-NNNNN.arrow``): every dropped record and why."""
    return _with_kind(
        [
            pa.field("id", pa.string()),  # null when the record was too broken to have one
            pa.field("source", pa.string(), nullable=False),
            pa.field("rule", pa.string(), nullable=False),  # the filter or reader error that dropped it
            pa.field("detail", pa.string()),  # e.g. the measured value against its threshold
            pa.field("duplicate_of", pa.string()),  # for dedup rejections: the surviving document's id
            pa.field("origin", pa.string(), nullable=False),  # "input-path:line"
            pa.field("text", pa.large_string()),  # the record's text as far as it was parsed
        ],
        "rejected",
    )


def token_type(vocab_size: int) -> pa.DataType:
    """The narrowest unsigned integer type that holds every id of a vocabulary."""
    return pa.uint16() if vocab_size <= 1 << 16 else pa.uint32()


def sequence_schema(seq_len: int, vocab_size: int, extra: dict[str, str] | None = None) -> pa.Schema:
    """Schema of a sequence shard (``cpm data pack``): samples of ``seq_len + 1`` tokens.

    Consecutive samples overlap by one token (input = tokens[:-1], labels = tokens[1:]).
    ``doc_ids`` lists the documents a sample spans, in order; ``start_offset`` is the
    position, within the first of them (counting its trailing ``<eod>``), of the sample's first token.
    Sequence shards are written uncompressed so that the loader can memory-map them.
    """
    meta = {"seq_len": seq_len, "vocab_size": vocab_size}
    meta.update(extra or {})
    return _with_kind(
        [
            pa.field("tokens", pa.list_(token_type(vocab_size), seq_len + 1), nullable=False),
            pa.field("doc_ids", pa.list_(pa.string()), nullable=False),
            pa.field("start_offset", pa.int32(), nullable=False),
        ],
        "sequences",
        meta,
    )


def schema_kind(schema: pa.Schema) -> str | None:
    """The ``cpm.kind`` of a schema ("documents", "rejected", "sequences"), or None if not a cpm shard."""
    meta = schema.metadata or {}
    kind = meta.get(KIND_KEY)
    return kind.decode() if kind is not None else None


def schema_version(schema: pa.Schema) -> int | None:
    meta = schema.metadata or {}
    version = meta.get(VERSION_KEY)
    return int(version) if version is not None else None


def schema_metadata(schema: pa.Schema) -> dict[str, str]:
    """The ``cpm.*`` metadata of a schema as plain strings, without the ``cpm.`` prefix."""
    return {
        k.decode()[4:]: v.decode()
        for k, v in (schema.metadata or {}).items()
        if k.startswith(b"cpm.")
    }


def expected_schema(schema: pa.Schema) -> pa.Schema:
    """The schema a shard of this kind must have (for sequences, with its own seq_len and vocab)."""
    kind = schema_kind(schema)
    if kind == "documents":
        return document_schema()
    if kind == "rejected":
        return rejected_schema()
    if kind == "sequences":
        meta = schema_metadata(schema)
        try:
            return sequence_schema(int(meta["seq_len"]), int(meta["vocab_size"]))
        except (KeyError, ValueError) as exc:
            raise ShardError(f"sequence shard metadata lacks a valid {exc}") from None
    if kind == "signatures":
        meta = schema_metadata(schema)
        try:
            return signature_schema(int(meta["num_perm"]), {k: v for k, v in meta.items() if k not in ("kind", "schema_version", "num_perm")})
        except (KeyError, ValueError) as exc:
            raise ShardError(f"signature shard metadata lacks a valid {exc}") from None
    raise ShardError(f"not a cpm shard (metadata has no known cpm.kind: {kind!r})")


def validate_schema(schema: pa.Schema, where: str, kind: str | None = None) -> str:
    """Check a shard's schema against the one its kind must have; return the kind.

    Raises :class:`ShardError` naming ``where`` (usually the file) and the first difference.
    """
    found_kind = schema_kind(schema)
    if kind is not None and found_kind != kind:
        raise ShardError(f"{where}: expected a {kind} shard, found {found_kind or 'a non-cpm Arrow file'}")
    version = schema_version(schema)
    if version is None:
        raise ShardError(f"{where}: no cpm.schema_version in the Arrow metadata")
    if version > SCHEMA_VERSION:
        raise ShardError(
            f"{where}: schema version {version} is newer than this cpm understands ({SCHEMA_VERSION}); upgrade cpm"
        )
    try:
        want = expected_schema(schema)
    except ShardError as exc:
        raise ShardError(f"{where}: {exc}") from None
    for field in want:
        idx = schema.get_field_index(field.name)
        if idx < 0:
            raise ShardError(f"{where}: column {field.name!r} is missing")
        got = schema.field(idx)
        if not got.type.equals(field.type):
            raise ShardError(f"{where}: column {field.name!r} has type {got.type}, expected {field.type}")
    return found_kind  # type: ignore[return-value]


def signature_schema(num_perm: int, extra: dict[str, str] | None = None) -> pa.Schema:
    """Schema of a dedup signature index shard (``dedup/signatures-NNNNN-of-NNNNN.minhash`` of ``cpm corpus build``, an Arrow IPC file).

    One row per kept document: its MinHash signature and the digest of its normalised text,
    so that a later build can drop its own copies of these documents (``--against DIR``).
    The metadata records how the signatures were made (``num_perm``, ``ngram``, ``seed``,
    ``hash_scheme``); builds with different values cannot be compared.
    """
    meta = {"num_perm": num_perm}
    meta.update(extra or {})
    return _with_kind(
        [
            pa.field("id", pa.string(), nullable=False),
            pa.field("source", pa.string(), nullable=False),
            pa.field("num_chars", pa.int32(), nullable=False),
            pa.field("text_digest", pa.binary(16), nullable=False),  # BLAKE2b-128 of the hashing form of the text
            pa.field("signature", pa.list_(pa.uint32(), num_perm), nullable=False),
        ],
        "signatures",
        meta,
    )
