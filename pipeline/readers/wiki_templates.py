"""The prose-carrying templates of zhwiki, rendered to the text a reader sees on the page.

A template is looked up by its name with the first letter's case, ``_`` and surrounding blanks
ignored (``{{Lang-en|…}}`` = ``{{lang-en|…}}``). Any template not listed here renders to
nothing: infoboxes, navboxes, citations, maintenance banners, footnote templates and the like.

=====================================  ============================================  =====================
template                               renders                                        example -> text
=====================================  ============================================  =====================
``lang``, ``lang2``                    the text (2nd argument)                        ``{{lang|en|Accelerator}}`` -> ``Accelerator``
``lang-xx``, ``langx|xx``              ``<language>：text``                            ``{{lang-en|Face ID}}`` -> ``英语：Face ID``
``link-xx`` (``link-en``, ``link-ja``)  the local title (1st argument)                ``{{link-en|艾克曼公式|Ackermann's formula}}`` -> ``艾克曼公式``
``le``                                 the label (3rd) or the local title (1st)       ``{{le|BIND方法|BIND method}}`` -> ``BIND方法``
``ill``, ``interlanguage link``        ``lt=`` or the local title (1st)               ``{{ill|沃尔夫冈|de|Wolfgang}}`` -> ``沃尔夫冈``
``tsl``, ``translink``                 the label (4th), the local title (3rd) or     ``{{tsl|en|Congestion window|拥塞窗口}}`` -> ``拥塞窗口``
                                       the foreign title (2nd)
``rfc``, ``ietf rfc``                  ``RFC <number>``                               ``{{IETF RFC|4918}}`` -> ``RFC 4918``
``convert``, ``cvt``                   the value and its unit as written              ``{{convert|6300|km|mi}}`` -> ``6300 km``
``nowrap``, ``nobr``, ``small``, …     the text                                       ``{{nowrap|后进先出}}`` -> ``后进先出``
``birth date`` / ``start date`` / …    ``Y年M月D日`` (the age is dropped)             ``{{Start date and age|2017|08|28}}`` -> ``2017年8月28日``
``bd``, ``生卒``                       ``Y年M月D日—Y年M月D日``                          ``{{bd|1900年|1月1日|1990年|}}`` -> ``1900年1月1日—1990年``
``mvar``, ``math``, ``var``            the text                                       ``{{mvar|G}}`` -> ``G``
``abbr``, ``abbrlink``                 the abbreviation (1st)                         ``{{abbr|UN|United Nations}}`` -> ``UN``
``ruby``, ``ruby-zh-p``                ``字（注音）``                                  ``{{ruby|行|háng}}`` -> ``行（háng）``
``quote``, ``cquote``, ``blockquote``  the quoted text                                ``{{quote|……|作者}}`` -> ``……``
``sic``, ``linktext``                  its arguments joined                           ``{{linktext|自|由}}`` -> ``自由``
``flag``, ``flagcountry``              the country name                               ``{{flag|中国}}`` -> ``中国``
``javadoc:se``                         ``name=`` or the class name (last argument)   ``{{Javadoc:SE|java/lang|Object}}`` -> ``Object``
``lj``, ``transl``, ``ipa``, ``unicode``  the text                                       ``{{lj|東京}}`` -> ``東京``
``font``, ``underline``, ``tooltip``   the text (``text=`` for ``font``)
``not a typo``, ``audio``              the text (``audio``: its label)
``snd``, ``ndash``, ``mdash``, ``nbsp``  the dash or space
=====================================  ============================================  =====================
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Arguments:
    """A template's arguments: positional ones in order, named ones by name (both stripped)."""

    positional: list[str] = field(default_factory=list)
    named: dict[str, str] = field(default_factory=dict)

    def get(self, index: int) -> str:
        """The ``index``-th positional argument (1-based), ``""`` when absent."""
        return self.positional[index - 1] if len(self.positional) >= index else ""

    def first(self, *indexes: int) -> str:
        """The first non-empty positional argument among ``indexes``."""
        return next((value for value in map(self.get, indexes) if value), "")


LANGUAGE_NAMES = {
    "en": "英语", "ja": "日语", "ko": "韩语", "fr": "法语", "de": "德语", "ru": "俄语", "es": "西班牙语",
    "it": "意大利语", "pt": "葡萄牙语", "la": "拉丁语", "el": "希腊语", "grc": "古希腊语", "ar": "阿拉伯语",
    "he": "希伯来语", "nl": "荷兰语", "sv": "瑞典语", "pl": "波兰语", "tr": "土耳其语", "vi": "越南语",
    "th": "泰语", "mn": "蒙古语", "bo": "藏语", "ug": "维吾尔语", "sa": "梵语", "fa": "波斯语", "hi": "印地语",
    "ms": "马来语", "id": "印尼语", "uk": "乌克兰语", "cs": "捷克语", "fi": "芬兰语", "da": "丹麦语",
    "no": "挪威语", "hu": "匈牙利语", "ro": "罗马尼亚语", "ga": "爱尔兰语", "yue": "粤语",
}  # fmt: skip

_RANGE_WORDS = {"-": "–", "–": "–", "to": "至", "and": "和", "or": "或", "~": "~", "+/-": "±", "x": "×", "by": "×"}
_DASHES = {"snd": " – ", "spaced ndash": " – ", "ndash": "–", "mdash": "—", "nbsp": " ", "·": "·", "dot": "·", "!": "|"}


def _language(args: Arguments, code: str) -> str:
    text = args.get(1)
    name = LANGUAGE_NAMES.get(code.lower())
    return f"{name}：{text}" if name and text else text


def _date(args: Arguments) -> str:
    """``Y年M月D日`` from ``|Y|M|D`` (also ``|Y-M-D``), as far as the parts are given."""
    parts = args.positional[:3]
    if len(parts) == 1 and re.fullmatch(r"\d{1,4}-\d{1,2}(?:-\d{1,2})?", parts[0]):
        parts = parts[0].split("-")
    digits = [part.lstrip("0") or "0" for part in parts if part.isdigit()]
    return "".join(f"{value}{unit}" for value, unit in zip(digits, "年月日"))


def _bd(args: Arguments) -> str:
    born = "".join(args.positional[:2])
    died = "".join(args.positional[2:4])
    return f"{born}—{died}" if died else born


def _convert(args: Arguments) -> str:
    values = args.positional
    if len(values) >= 4 and values[1].lower() in _RANGE_WORDS:
        return f"{values[0]}{_RANGE_WORDS[values[1].lower()]}{values[2]} {values[3]}"
    return " ".join(values[:2])


def _tsl(args: Arguments) -> str:
    return args.first(4, 3, 2)


def _javadoc(args: Arguments) -> str:
    return args.named.get("name") or (args.positional[-1].rsplit("/", 1)[-1] if args.positional else "")


def _ruby(args: Arguments) -> str:
    base, annotation = args.get(1), args.get(2)
    return f"{base}（{annotation}）" if annotation else base


def _quote(args: Arguments) -> str:
    return args.named.get("text") or args.named.get("quote") or args.get(1)


Renderer = Callable[[Arguments], str]

TEMPLATES: dict[str, Renderer] = {
    "lang": lambda a: a.get(2),
    "lang2": lambda a: a.get(2),
    "langx": lambda a: _language(Arguments(a.positional[1:], a.named), a.get(1)),
    "le": lambda a: a.first(3, 1),
    "ill": lambda a: a.named.get("lt") or a.get(1),
    "interlanguage link": lambda a: a.named.get("lt") or a.get(1),
    "tsl": _tsl,
    "translink": _tsl,
    "rfc": lambda a: "、".join(f"RFC {n}" for n in a.positional if n),
    "ietf rfc": lambda a: "、".join(f"RFC {n}" for n in a.positional if n),
    "convert": _convert,
    "cvt": _convert,
    "nowrap": lambda a: a.get(1),
    "nobr": lambda a: a.get(1),
    "nobold": lambda a: a.get(1),
    "noitalic": lambda a: a.get(1),
    "small": lambda a: a.get(1),
    "smaller": lambda a: a.get(1),
    "big": lambda a: a.get(1),
    "larger": lambda a: a.get(1),
    "resize": lambda a: a.positional[-1] if a.positional else "",
    "color": lambda a: a.get(2),
    "font color": lambda a: a.positional[-1] if a.positional else "",
    "mvar": lambda a: a.get(1),
    "math": lambda a: a.get(1),
    "var": lambda a: a.get(1),
    "abbr": lambda a: a.get(1),
    "abbrlink": lambda a: a.get(1),
    "ruby": _ruby,
    "ruby-zh-p": _ruby,
    "quote": _quote,
    "cquote": _quote,
    "blockquote": _quote,
    "sic": lambda a: "".join(a.positional),
    "linktext": lambda a: "".join(a.positional),
    "flag": lambda a: a.get(1),
    "flagcountry": lambda a: a.get(1),
    "javadoc:se": _javadoc,
    "lj": lambda a: a.get(1),
    "transl": lambda a: a.positional[-1] if a.positional else "",
    "ipa": lambda a: a.get(1),
    "unicode": lambda a: a.get(1),
    "not a typo": lambda a: "".join(a.positional),
    "audio": lambda a: a.get(2),
    "font": lambda a: a.named.get("text") or a.get(1),
    "underline": lambda a: a.get(1),
    "tooltip": lambda a: a.get(1),
    "birth date": _date,
    "birth date and age": _date,
    "death date": _date,
    "death date and age": _date,
    "start date": _date,
    "start date and age": _date,
    "end date": _date,
    "dts": _date,
    "date": _date,
    "年月日": _date,
    "出生日期": _date,
    "出生日期和年龄": _date,
    "bd": _bd,
    "生卒": _bd,
    **{name: (lambda text: lambda a: text)(text) for name, text in _DASHES.items()},
}


def template_key(name: str) -> str:
    """The lookup key of a template name: blanks and ``_`` folded, lower case."""
    return " ".join(name.replace("_", " ").split()).lower()


def render_template(name: str, args: Arguments) -> str | None:
    """The visible text of a listed template, or None for a template that renders to nothing."""
    key = template_key(name)
    renderer = TEMPLATES.get(key)
    if renderer is not None:
        return renderer(args)
    if key.startswith("lang-") and len(key) <= 12:
        return _language(args, key[5:])
    if key.startswith("link-") and len(key) <= 12:
        return args.get(1)
    return None


def is_listed(name: str) -> bool:
    """True when a template renders to text (saves splitting the arguments of everything else)."""
    key = template_key(name)
    return key in TEMPLATES or ((key.startswith(("lang-", "link-"))) and len(key) <= 12)
