"""Evaluation of a trained model: perplexity on sequence shards and zero-shot multiple choice.

Zero-shot multiple choice follows the CPM-1 paper (arXiv 2012.00413, section 3): fill each
candidate into a template, score a span of the filled text by its mean negative
log-likelihood under the model, and predict the candidate with the lowest. A
:class:`Template` is a pattern with ``{label}`` (where the candidate goes) and the task's
fields (``{text}``, ``{s1}``, ``{s2}``, ``{before}``/``{after}``), plus the name of the
field whose span is scored (``"all"``: the whole filled text). Built in:

========  =====================================  ==============  ====================
name      pattern                                scored span     candidates
========  =====================================  ==============  ====================
tnews     ``这是关于{label}的文章：{text}``          text            3 wrong + gold, x3
iflytek   ``这是关于{label}的应用程序：{text}``      text            3 wrong + gold, x3
ocnli     ``{s1}？{label}，{s2}`` (对/错/也许)      s2              all three
chid      ``{before}{label}{after}`` (the idiom)  all             all (usually 7-10)
========  =====================================  ==============  ====================

Every scored sequence starts with ``<eod>`` (documents follow an ``<eod>`` in the packed
training data, so the first token has its usual context). Segments are tokenized
separately (context, then the scored span) so that every candidate scores the same
tokens of the span. Sequences longer than the model's context lose context tokens from
the left first (the ChID window is centred on the idiom).

The CLUE JSON-lines files are read as published (:func:`read_choice_task`).
"""

from __future__ import annotations

import json
import logging
import math
import random
import re
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from cpm.errors import CpmError
from cpm.jsonl import read_json_objects

log = logging.getLogger(__name__)

# CLUE TNEWS label_desc -> the Chinese label word filled into the template.
TNEWS_LABEL_WORDS: dict[str, str] = {
    "news_story": "故事",
    "news_culture": "文化",
    "news_entertainment": "娱乐",
    "news_sports": "体育",
    "news_finance": "财经",
    "news_house": "房产",
    "news_car": "汽车",
    "news_edu": "教育",
    "news_tech": "科技",
    "news_military": "军事",
    "news_travel": "旅游",
    "news_world": "国际",
    "news_stock": "股票",
    "news_agriculture": "农业",
    "news_game": "电竞",
}
# CLUE OCNLI label -> the word between the two sentences.
OCNLI_LABEL_WORDS: dict[str, str] = {"entailment": "对", "contradiction": "错", "neutral": "也许"}
TASK_KINDS = ("tnews", "iflytek", "ocnli", "chid")
BLANK = re.compile(r"#idiom\d*#")
BUNDLED_TASKS = Path(__file__).resolve().parent / "tasks"


@dataclass(frozen=True)
class Template:
    """A prompt pattern with ``{label}`` and task fields, and the field whose span is scored."""

    pattern: str
    score: str  # a field name of the pattern, or "all"
    candidates: str = "all"  # "all" or "sampled" (the paper's 3 wrong + gold, repeated)

    def fields(self) -> list[str]:
        return [name for _, name, _, _ in string.Formatter().parse(self.pattern) if name is not None]

    def validate(self, where: str = "template") -> None:
        names = self.fields()
        if "label" not in names:
            raise CpmError(f"{where}: {self.pattern!r} has no {{label}} slot for the candidate")
        if self.score != "all" and self.score not in names:
            raise CpmError(f"{where}: scored field {self.score!r} is not in {self.pattern!r} (fields: {', '.join(names)})")
        if len(names) != len(set(names)):
            raise CpmError(f"{where}: {self.pattern!r} uses a field twice")


BUILTIN_TEMPLATES: dict[str, Template] = {
    "tnews": Template("这是关于{label}的文章：{text}", "text", "sampled"),
    "iflytek": Template("这是关于{label}的应用程序：{text}", "text", "sampled"),
    "ocnli": Template("{s1}？{label}，{s2}", "s2", "all"),
    "chid": Template("{before}{label}{after}", "all", "all"),
}


@dataclass
class ChoiceExample:
    """One question: its fields, the candidate words, the gold index (None when unlabelled)."""

    id: str
    fields: dict[str, str]
    candidates: list[str]
    gold: int | None
    origin: str  # file:line


# ------------------------------------------------------------------------------ reading


def resolve_task_path(task: str) -> Path:
    """A task file path, or the name of a bundled sample (``tnews``, ``ocnli``, ... -> ``tasks/NAME.jsonl``)."""
    path = Path(task)
    if path.is_file():
        return path
    bundled = BUNDLED_TASKS / f"{task}.jsonl"
    if not path.suffix and bundled.is_file():
        return bundled
    names = ", ".join(sorted(p.stem for p in BUNDLED_TASKS.glob("*.jsonl")))
    raise CpmError(f"{task}: no such task file (bundled samples: {names})")


def _read_jsonl(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """``(line number, object)`` of every non-blank line; errors name the file and line."""
    return list(read_json_objects(path))


def detect_task_kind(record: dict[str, Any]) -> str | None:
    """The CLUE task a record looks like, from its keys."""
    if "candidates" in record and "content" in record:
        return "chid"
    if "sentence1" in record and "sentence2" in record:
        return "ocnli"
    if "label_desc" in record:
        return "tnews"
    if "label_des" in record:
        return "iflytek"
    return None


def _field(record: dict[str, Any], key: str, where: str) -> Any:
    if key not in record:
        raise CpmError(f"{where}: missing field {key!r}")
    return record[key]


def _text(record: dict[str, Any], key: str, where: str) -> str:
    value = _field(record, key, where)
    if not isinstance(value, str):
        raise CpmError(f"{where}: field {key!r} must be a string")
    return value


def read_labels_file(path: Path, kind: str) -> list[str]:
    """Label words from a CLUE ``labels.json`` (``{"label_desc"|"label_des": ...}`` per line) or a plain list."""
    words: list[str] = []
    text_lines = []
    try:
        text_lines = path.read_text("utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise CpmError(f"{path}: cannot read labels ({exc})") from None
    for number, line in enumerate(text_lines, 1):
        line = line.strip()
        if not line:
            continue
        if line.startswith("{"):
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise CpmError(f"{path}:{number}: not valid JSON ({exc.msg})") from None
            words.append(_label_word(record, kind, f"{path}:{number}"))
        else:
            words.append(line)
    if len(words) < 2:
        raise CpmError(f"{path}: a labels file needs at least two labels")
    return list(dict.fromkeys(words))


def _label_word(record: dict[str, Any], kind: str, where: str) -> str:
    if kind == "tnews":
        desc = _text(record, "label_desc", where)
        if desc not in TNEWS_LABEL_WORDS:
            raise CpmError(f"{where}: unknown TNEWS label_desc {desc!r} (known: {', '.join(TNEWS_LABEL_WORDS)})")
        return TNEWS_LABEL_WORDS[desc]
    if kind == "iflytek":
        return _text(record, "label_des", where)
    if kind == "ocnli":
        label = _text(record, "label", where)
        return OCNLI_LABEL_WORDS.get(label, label)
    raise CpmError(f"{where}: {kind} has no label words")


def _read_answers(path: Path) -> dict[str, int]:
    """A ChID answers file: one JSON object ``{"#idiom000123#": 3, ...}`` or one such object per line."""
    try:
        text = path.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CpmError(f"{path}: cannot read answers ({exc})") from None
    answers: dict[str, int] = {}
    try:
        chunks = [json.loads(text)]
    except json.JSONDecodeError:
        chunks = []
        for number, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    chunks.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise CpmError(f"{path}:{number}: not valid JSON ({exc.msg})") from None
    for chunk in chunks:
        if not isinstance(chunk, dict):
            raise CpmError(f"{path}: expected JSON objects mapping #idiomNNN# tags to answer indices")
        for tag, index in chunk.items():
            if not isinstance(index, int):
                raise CpmError(f"{path}: answer of {tag} must be an integer index, got {index!r}")
            answers[tag] = index
    return answers


def read_choice_task(
    path: str | Path,
    kind: str | None = None,
    *,
    answers: str | Path | None = None,
    labels: str | Path | None = None,
) -> tuple[str, list[ChoiceExample]]:
    """Read a CLUE JSON-lines task file into examples; returns ``(kind, examples)``.

    ``kind`` (tnews, iflytek, ocnli, chid) is detected from the first record's keys when
    None. Candidates: TNEWS the 15 label words of the paper, IFLYTEK the distinct
    ``label_des`` of the file (sorted by label id), OCNLI 对/错/也许, ChID the idioms;
    ``labels`` (a CLUE ``labels.json`` or one word per line) overrides the label set.
    ChID answers come inline (``"answer": i`` for one blank, ``"groundTruth"``) or from
    ``answers`` (``{"#idiom000123#": i}``). Records without a gold label (OCNLI ``"-"``)
    become unlabelled examples: predicted but not counted in the accuracy.
    """
    path = Path(path)
    records = _read_jsonl(path)
    if not records:
        raise CpmError(f"{path}: no examples")
    if kind is None:
        kind = detect_task_kind(records[0][1])
        if kind is None:
            raise CpmError(
                f"{path}:{records[0][0]}: cannot tell the task from the keys {sorted(records[0][1])}; "
                f"give --format ({', '.join(TASK_KINDS)})"
            )
    if kind not in TASK_KINDS:
        raise CpmError(f"unknown task format {kind!r} (expected one of {', '.join(TASK_KINDS)})")
    if kind == "chid":
        return kind, _read_chid(path, records, _read_answers(Path(answers)) if answers else {})
    label_set = read_labels_file(Path(labels), kind) if labels else _default_labels(path, kind, records)
    return kind, [_choice_example(path, number, record, kind, label_set) for number, record in records]


def _default_labels(path: Path, kind: str, records: list[tuple[int, dict[str, Any]]]) -> list[str]:
    """TNEWS's and OCNLI's label words; for IFLYTEK the distinct labels of the file, in label-id order."""
    if kind == "tnews":
        return list(TNEWS_LABEL_WORDS.values())
    if kind == "ocnli":
        return list(OCNLI_LABEL_WORDS.values())
    seen: dict[str, Any] = {}
    for number, record in records:
        word = _label_word(record, kind, f"{path}:{number}")
        seen.setdefault(word, record.get("label", word))
    return sorted(seen, key=lambda w: (_as_int(seen[w]), w))


def _choice_example(path: Path, number: int, record: dict[str, Any], kind: str, label_set: list[str]) -> ChoiceExample:
    """One TNEWS, IFLYTEK or OCNLI record (line ``number``) as an example over ``label_set``."""
    where = f"{path}:{number}"
    if kind == "ocnli":
        fields = {"s1": _text(record, "sentence1", where), "s2": _text(record, "sentence2", where)}
        label = record.get("label")
        gold_word = OCNLI_LABEL_WORDS.get(label) if isinstance(label, str) else None
        if label not in (None, "-", "") and gold_word is None:
            raise CpmError(f"{where}: unknown OCNLI label {label!r} (expected entailment, neutral, contradiction or -)")
    else:
        fields = {"text": _text(record, "sentence", where)}
        if isinstance(record.get("keywords"), str):
            fields["keywords"] = record["keywords"]
        has_label = ("label_desc" if kind == "tnews" else "label_des") in record
        gold_word = _label_word(record, kind, where) if has_label else None
    if gold_word is not None and gold_word not in label_set:
        raise CpmError(f"{where}: label {gold_word!r} is not in the label set ({', '.join(label_set)})")
    gold = label_set.index(gold_word) if gold_word is not None else None
    return ChoiceExample(str(record.get("id", number - 1)), fields, list(label_set), gold, where)


def _as_int(value: Any) -> float:
    try:
        return int(value)
    except (TypeError, ValueError):
        return math.inf


def _read_chid(path: Path, records: list[tuple[int, dict[str, Any]]], answers: dict[str, int]) -> list[ChoiceExample]:
    examples = []
    for number, record in records:
        where = f"{path}:{number}"
        candidates = _field(record, "candidates", where)
        content = _field(record, "content", where)
        passages = [content] if isinstance(content, str) else content
        if not isinstance(passages, list) or not all(isinstance(p, str) for p in passages):
            raise CpmError(f"{where}: 'content' must be a string or a list of strings")
        tags = [m.group(0) for p in passages for m in BLANK.finditer(p)]
        if not tags:
            raise CpmError(f"{where}: no #idiom# blank in 'content'")
        # candidates: one shared list (CLUE), or one list per blank (original ChID)
        if not isinstance(candidates, list) or not candidates:
            raise CpmError(f"{where}: 'candidates' must be a non-empty list")
        per_blank = isinstance(candidates[0], list)
        if per_blank and len(candidates) != len(tags):
            raise CpmError(f"{where}: {len(candidates)} candidate lists for {len(tags)} blanks")
        golds: list[int | None] = []
        truth = record.get("groundTruth")
        for i, tag in enumerate(tags):
            options = candidates[i] if per_blank else candidates
            gold: int | None = None
            if tag in answers:
                gold = answers[tag]
            elif isinstance(record.get("answer"), int) and len(tags) == 1:
                gold = record["answer"]
            elif isinstance(truth, list) and i < len(truth) and truth[i] in options:
                gold = options.index(truth[i])
            if gold is not None and not 0 <= gold < len(options):
                raise CpmError(f"{where}: answer {gold} of {tag} is out of range for {len(options)} candidates")
            golds.append(gold)
        fills = {tag: (candidates[i] if per_blank else candidates)[g] for i, (tag, g) in enumerate(zip(tags, golds)) if g is not None}
        blank_index = 0
        for passage in passages:
            for match in BLANK.finditer(passage):
                tag = match.group(0)

                def other(m: re.Match[str]) -> str:
                    return fills.get(m.group(0), "")

                before = BLANK.sub(other, passage[: match.start()])
                after = BLANK.sub(other, passage[match.end() :])
                options = candidates[blank_index] if per_blank else candidates
                examples.append(
                    ChoiceExample(tag, {"before": before, "after": after}, [str(o) for o in options], golds[blank_index], where)
                )
                blank_index += 1
    return examples


# ------------------------------------------------------------------------------ encoding


def render_segments(template: Template, fields: dict[str, str], candidate: str, where: str = "") -> list[tuple[str | None, str]]:
    """The filled template as ``(field name or None for literal text, text)`` segments."""
    segments: list[tuple[str | None, str]] = []
    for literal, name, _, _ in string.Formatter().parse(template.pattern):
        if literal:
            segments.append((None, literal))
        if name is None:
            continue
        if name == "label":
            segments.append(("label", candidate))
        elif name in fields:
            segments.append((name, fields[name]))
        else:
            raise CpmError(f"{where or 'template'}: the task has no field {{{name}}} (it has {', '.join(sorted(fields))})")
    return segments


def encode_choice(
    tokenizer: Any, template: Template, fields: dict[str, str], candidate: str, max_len: int, where: str = ""
) -> tuple[list[int], list[bool]]:
    """Token ids (starting with ``<eod>``) of one filled template and which of them are scored.

    A named scored field: the text before it is context, its own tokens are scored, the
    text after it is dropped (it cannot change a causal model's score of the span).
    ``"all"``: every token after ``<eod>`` is scored; the text before ``{label}``, the
    candidate and the text after are tokenized separately.
    """
    segments = render_segments(template, fields, candidate, where)
    if template.score == "all":
        at = next(i for i, (name, _) in enumerate(segments) if name == "label")
        parts = ["".join(t for _, t in segments[:at]), segments[at][1], "".join(t for _, t in segments[at + 1 :])]
        pieces = [tokenizer.encode(p) if p else [] for p in parts]
        ids = [tokenizer.eod_id] + pieces[0] + pieces[1] + pieces[2]
        scored = [False] + [True] * (len(ids) - 1)
        if len(ids) > max_len:  # a window of max_len tokens centred on the candidate
            centre = 1 + len(pieces[0]) + len(pieces[1]) // 2
            start = min(max(0, centre - max_len // 2), len(ids) - max_len)
            ids, scored = ids[start : start + max_len], scored[start : start + max_len]
            scored[0] = False  # the first token of the window has no context
        return ids, scored
    at = next(i for i, (name, _) in enumerate(segments) if name == template.score)
    context = "".join(t for _, t in segments[:at])
    span = tokenizer.encode(segments[at][1]) if segments[at][1] else []
    if not span:
        raise CpmError(f"{where or 'example'}: the scored field {{{template.score}}} is empty")
    prefix = [tokenizer.eod_id] + (tokenizer.encode(context) if context else [])
    excess = len(prefix) + len(span) - max_len
    if excess > 0:  # drop context from the left, keeping one token before the span
        drop = min(excess, len(prefix) - 1)
        prefix = prefix[drop:]
        excess -= drop
    if excess > 0:
        span = span[: len(span) - excess]
    return prefix + span, [False] * len(prefix) + [True] * len(span)


# ------------------------------------------------------------------------------ scoring


def mean_span_nll(
    model: Any,
    sequences: Sequence[tuple[list[int], list[bool]]],
    *,
    pad_id: int,
    batch_size: int = 8,
    device: Any = "cpu",
    progress: Callable[[int], None] | None = None,
) -> list[float]:
    """Mean negative log-likelihood of the scored tokens of each sequence (natural log).

    Sequences are sorted by length and right-padded with ``pad_id`` into batches; the
    padding is after every scored token, so a causal model gives the same values as
    without it. ``model(idx)`` must return logits ``(B, T, V)``.
    """
    import torch

    order = sorted(range(len(sequences)), key=lambda i: (len(sequences[i][0]), i))
    out = [math.nan] * len(sequences)
    model.eval()
    with torch.no_grad():
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            width = max(len(sequences[i][0]) for i in chunk)
            idx = torch.full((len(chunk), width), pad_id, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.bool)
            for row, i in enumerate(chunk):
                ids, scored = sequences[i]
                if not any(scored[1:]) or scored[0]:
                    raise ValueError("a sequence needs scored tokens after its first token")
                idx[row, : len(ids)] = torch.tensor(ids)
                mask[row, : len(ids)] = torch.tensor(scored)
            idx, mask = idx.to(device), mask.to(device)
            logits = model(idx[:, :-1])
            token_nll = torch.nn.functional.cross_entropy(
                logits.float().reshape(-1, logits.shape[-1]), idx[:, 1:].reshape(-1), reduction="none"
            ).view(len(chunk), -1)
            target_mask = mask[:, 1:]
            nll = (token_nll * target_mask).sum(1) / target_mask.sum(1)
            for row, i in enumerate(chunk):
                out[i] = float(nll[row])
            if progress is not None:
                progress(len(chunk))
    return out


def wilson_interval(correct: float, total: int, z: float = 1.959964) -> tuple[float, float]:
    """The Wilson score interval of a proportion (95% for the default ``z``)."""
    if total == 0:
        return (math.nan, math.nan)
    p = correct / total
    denom = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denom
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def bootstrap_interval(values: Sequence[float], seed: int = 0, resamples: int = 2000, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (seeded)."""
    import numpy as np

    if not values:
        return (math.nan, math.nan)
    data = np.asarray(values, dtype=np.float64)
    rng = np.random.default_rng(seed)
    means = data[rng.integers(0, len(data), size=(resamples, len(data)))].mean(axis=1)
    tail = (1 - level) / 2 * 100
    return (float(np.percentile(means, tail)), float(np.percentile(means, 100 - tail)))


@dataclass
class ChoiceResult:
    """Accuracy over the labelled examples with its 95% interval, and per-example predictions."""

    task: str
    template: str
    score: str
    candidates: str
    examples: int
    labelled: int
    accuracy: float
    ci_low: float
    ci_high: float
    ci_method: str
    repeat_accuracies: list[float] = field(default_factory=list)
    predictions: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        data = {k: v for k, v in self.__dict__.items() if k != "predictions"}
        return data


def sample_candidate_sets(
    examples: Sequence[ChoiceExample], wrong: int, repeats: int, seed: int
) -> list[list[list[int]]]:
    """The paper's protocol: per example and repeat, ``wrong`` random wrong candidates plus the gold one (sorted indices)."""
    rng = random.Random(seed)
    sets = []
    for ex in examples:
        if ex.gold is None:
            raise CpmError(f"{ex.origin}: sampled candidates need a gold label (use --candidates all for unlabelled data)")
        others = [i for i in range(len(ex.candidates)) if i != ex.gold]
        sets.append([sorted(rng.sample(others, min(wrong, len(others))) + [ex.gold]) for _ in range(repeats)])
    return sets


def evaluate_choice(
    model: Any,
    tokenizer: Any,
    examples: Sequence[ChoiceExample],
    template: Template,
    *,
    max_len: int,
    candidates: str | None = None,
    wrong: int = 3,
    repeats: int = 3,
    seed: int = 0,
    batch_size: int = 8,
    device: Any = "cpu",
    task: str = "",
    show_progress: bool = False,
) -> ChoiceResult:
    """Zero-shot multiple choice: predict the candidate whose scored span has the lowest mean NLL.

    ``candidates`` is ``"all"`` (every candidate of each example) or ``"sampled"`` (the
    CPM-1 protocol: ``wrong`` random wrong labels plus the gold one, ``repeats`` times,
    seeded by ``seed``); None takes the template's default. Accuracy of ``sampled`` is the
    mean over repeats with a bootstrap interval over examples; of ``all``, a Wilson interval.
    """
    template.validate()
    mode = candidates or template.candidates
    if mode not in ("all", "sampled"):
        raise CpmError(f"--candidates must be 'all' or 'sampled', not {mode!r}")
    if not examples:
        raise CpmError("no examples to evaluate")
    sets = (sample_candidate_sets(examples, wrong, repeats, seed) if mode == "sampled"
            else [[list(range(len(ex.candidates)))] for ex in examples])
    scores = _score_pairs(model, tokenizer, examples, template, sets, max_len=max_len, batch_size=batch_size,
                          device=device, show_progress=show_progress)
    log.info("scored %d sequences for %d examples (%s candidates)", sum(map(len, scores)), len(examples), mode)

    predictions = []
    per_example: list[float] = []
    n_repeats = len(sets[0])
    repeat_correct = [0] * n_repeats
    for ex, per, score in zip(examples, sets, scores):
        record, correct = _predict(ex, per, score, mode)
        if ex.gold is not None:
            per_example.append(sum(correct) / len(correct))
        repeat_correct = [total + hit for total, hit in zip(repeat_correct, correct)]
        predictions.append(record)

    labelled = len(per_example)
    if mode == "sampled":
        (low, high), method = bootstrap_interval(per_example, seed=seed), "bootstrap over examples (2000 resamples)"
    else:
        (low, high), method = wilson_interval(sum(per_example), labelled), "Wilson"
    return ChoiceResult(
        task=task,
        template=template.pattern,
        score=template.score,
        candidates=mode if mode == "all" else f"sampled ({wrong} wrong + gold, {n_repeats} repeats, seed {seed})",
        examples=len(examples),
        labelled=labelled,
        accuracy=sum(per_example) / labelled if labelled else math.nan,
        ci_low=low,
        ci_high=high,
        ci_method=method,
        repeat_accuracies=[c / labelled for c in repeat_correct] if labelled and mode == "sampled" else [],
        predictions=predictions,
    )


def _score_pairs(model: Any, tokenizer: Any, examples: Sequence[ChoiceExample], template: Template,
                 sets: list[list[list[int]]], *, max_len: int, batch_size: int, device: Any,
                 show_progress: bool) -> list[dict[int, float]]:
    """Per example, the mean NLL of the scored span of each candidate that some candidate set needs
    (each pair scored once), by candidate index."""
    needed = sorted({(e, c) for e, per in enumerate(sets) for s in per for c in s})
    sequences = [
        encode_choice(tokenizer, template, examples[e].fields, examples[e].candidates[c], max_len, examples[e].origin)
        for e, c in needed
    ]
    bar = None
    if show_progress:
        from tqdm import tqdm

        bar = tqdm(total=len(sequences), desc="scoring", unit="seq", leave=False)
    nlls = mean_span_nll(
        model, sequences, pad_id=tokenizer.pad_id, batch_size=batch_size, device=device,
        progress=bar.update if bar is not None else None,
    )
    if bar is not None:
        bar.close()
    scores: list[dict[int, float]] = [{} for _ in examples]
    for (e, c), nll in zip(needed, nlls):
        scores[e][c] = nll
    return scores


def _predict(ex: ChoiceExample, per: list[list[int]], score: dict[int, float], mode: str) -> tuple[dict[str, Any], list[bool]]:
    """The prediction record of one example (``score``: NLL by candidate index) and, per candidate
    set, whether its prediction is the gold label."""
    trials = []
    for subset in per:
        pred = min(subset, key=lambda c: (score[c], c))
        trials.append({"candidates": [ex.candidates[c] for c in subset], "prediction": pred, "correct": pred == ex.gold})
    record: dict[str, Any] = {
        "id": ex.id,
        "origin": ex.origin,
        "gold": ex.gold,
        "gold_label": ex.candidates[ex.gold] if ex.gold is not None else None,
        "prediction": trials[0]["prediction"],
        "prediction_label": ex.candidates[trials[0]["prediction"]],
        "nll": {ex.candidates[c]: round(score[c], 6) for c in sorted({c for s in per for c in s})},
    }
    if ex.gold is not None:
        fraction = sum(t["correct"] for t in trials) / len(trials)
        record["correct"] = fraction if mode == "sampled" else bool(trials[0]["correct"])
    if mode == "sampled":
        record["trials"] = [{"candidates": t["candidates"], "prediction": ex.candidates[t["prediction"]]} for t in trials]
    return record, [t["correct"] for t in trials]


# ------------------------------------------------------------------------------ perplexity


def evaluate_perplexity(
    model: Any,
    data: str | Path | Sequence[str | Path],
    *,
    micro_batch: int = 8,
    split: str = "valid",
    device: Any = "cpu",
    max_batches: int | None = None,
    show_progress: bool = False,
) -> dict[str, float]:
    """Mean next-token loss (nats) and perplexity over every sample of a split of sequence shards."""
    import torch

    from cpm.trainer.data import evaluation_batches

    model.eval()
    total_loss = 0.0
    total_tokens = 0
    samples = 0
    batches: Iterable[Any] = evaluation_batches(data, micro_batch=micro_batch, split=split)
    if show_progress:
        from tqdm import tqdm

        batches = tqdm(batches, desc="eval", unit="batch", leave=False)
    with torch.no_grad():
        for i, batch in enumerate(batches):
            if max_batches is not None and i >= max_batches:
                break
            batch = batch.to(device)
            x, y = batch[:, :-1], batch[:, 1:]
            if x.shape[1] > model.config.n_positions:
                raise CpmError(f"sequences of {x.shape[1]} tokens exceed the model's context of {model.config.n_positions}")
            if int(batch.max()) >= model.config.vocab_size:
                raise CpmError(f"token id {int(batch.max())} is outside the model's vocabulary of {model.config.vocab_size}")
            loss = model(x, y)
            total_loss += float(loss) * y.numel()
            total_tokens += y.numel()
            samples += batch.shape[0]
    if not total_tokens:
        raise CpmError(f"{data}: the {split} split has no samples")
    mean = total_loss / total_tokens
    return {"loss": mean, "perplexity": math.exp(mean), "tokens": total_tokens, "samples": samples}
