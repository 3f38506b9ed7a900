"""Language identification (py3langid with its bundled model), a cleaning step."""

from __future__ import annotations

from functools import lru_cache
from typing import Any


@lru_cache(maxsize=1)
def _language_identifier() -> Any:
    from py3langid import langid

    return langid.LanguageIdentifier.from_model_file(langid.MODEL_FILE, norm_probs=True)


def detect_language(text: str) -> tuple[str, float]:
    """``(ISO 639-1 code, probability)`` of a text's language (py3langid, bundled model).

    Only the first 2,000 characters are looked at; empty text is ``("und", 0.0)``.
    """
    sample = text[:2000].strip()
    if not sample:
        return "und", 0.0
    language, probability = _language_identifier().classify(sample)
    return str(language), float(probability)
