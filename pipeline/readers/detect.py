"""Which reader an input file needs, from its name and first (decompressed) bytes."""

from __future__ import annotations

import os
import re

from cpm.pipeline.readers.compression import COMPRESSED_SUFFIX
from cpm.pipeline.readers.encoding import codec, detect_encoding
from cpm.pipeline.readers.text import is_chapter_heading

FORMATS = ("jsonl", "mediawiki_xml", "warc", "wet", "arc", "html", "text_novel", "thucnews_txt", "text")
ARCHIVE_FORMATS = ("warc", "wet", "arc")  # binary records inside are checked one by one
ARCHIVE_MAGIC = (b"WARC/", b"filedesc://")
_THUCNEWS_NAME = re.compile(r"^\d+\.txt$")


def detect_format(path: str, head: bytes, source: str | None = None) -> str:
    """Format of an input from its name and first (decompressed) bytes; one of :data:`FORMATS`.

    ``source`` decides what a plain ``.txt`` is: a novel for story, a THUCNews article for news
    (without it, ``<digits>.txt`` is THUCNews and a text with chapter headings is a novel).
    """
    name = COMPRESSED_SUFFIX.sub("", os.path.basename(path)).lower()
    start = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if start.startswith(b"filedesc://") or name.endswith(".arc"):  # ARC v1 starts with its filedesc record
        return "arc"
    if start.startswith(b"WARC/"):
        return "wet" if ".wet" in name or b"WARC-Type: conversion" in head else "warc"
    if start.startswith(b"<mediawiki") or (start.startswith(b"<?xml") and b"<mediawiki" in head[:4096]):
        return "mediawiki_xml"
    if name.endswith(".xml"):
        return "mediawiki_xml"
    if name.endswith((".html", ".htm")) or start[:15].lower().startswith((b"<!doctype html", b"<html")):
        return "html"
    if start.startswith(b"{") or name.endswith((".jsonl", ".json", ".ndjson")):
        return "jsonl"
    if source == "story":
        return "text_novel"
    if source == "news" or (source is None and _THUCNEWS_NAME.match(name)):
        return "thucnews_txt"
    if source is None:
        text = head.decode(codec(detect_encoding(head)), "replace")
        if any(is_chapter_heading(line.strip()) for line in text.splitlines()):
            return "text_novel"
    return "text"
