"""Main-text extraction from HTML pages (trafilatura), a cleaning step of webpage records."""

from __future__ import annotations

import logging
import re

logger = logging.getLogger(__name__)

_BLANK_LINES = re.compile(r"\n\s*\n+")


def html_to_text(html: str, url: str | None = None) -> str | None:
    """The main text of an HTML page (trafilatura; navigation, banners, footers and scripts go).

    Paragraphs are separated by ``"\\n"``. Returns None when no main text is found.
    """
    import trafilatura

    logging.getLogger("trafilatura").setLevel(logging.ERROR)
    try:
        text = trafilatura.extract(
            html,
            url=url,
            include_comments=False,
            include_tables=False,
            include_images=False,
            include_links=False,
            favor_precision=True,
            deduplicate=False,
            output_format="txt",
        )
    except Exception as error:  # trafilatura on pathological markup
        logger.debug("html_to_text failed on %s: %s", url, error)
        return None
    if not text or not text.strip():
        return None
    return _BLANK_LINES.sub("\n", text.strip())
