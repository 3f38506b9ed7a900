"""PII masking (the ``pii_masking`` cleaning step): forms, recall on the labelled set, precision."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import shared_lines

from cpm.pipeline.pii import id_check_digit, luhn_ok, mask_pii, pii_spans, width_normalised

ROOT = Path(__file__).resolve().parents[1]
LABELLED = ROOT / "tests" / "data" / "pii_contact_lines.jsonl"


@pytest.mark.parametrize(
    "text, masked",
    [
        ("联系电话（０７１７）５４０１２２０", "联系电话<PHONE>"),  # full-width, area code in brackets
        ("电话：６５０９１０４０，６５０９２１４０。", "电话：<PHONE>，<PHONE>。"),  # 8-digit local numbers, a list
        ("传真电话：０１０—６５０９２８２４。", "传真电话：<PHONE>。"),
        ("请拨打 010-65091040 转 8001", "请拨打 <PHONE>"),
        ("手机 138 0013 8000 或 +86 139-1234-5678", "手机 <PHONE> 或 <PHONE>"),
        ("咨询热线：400-810-8888", "咨询热线：<PHONE>"),
        ("加我QQ：12345678，备注来意", "加我QQ：<QQ>，备注来意"),
        ("身份证号：11010519491231002X", "身份证号：<ID>"),
        ("卡号 6222 0212 3456 7890 128", "卡号 <CARD>"),  # Luhn-valid
        ("退款至 6222021234567890128 账户", "退款至 <CARD> 账户"),
        ("邮箱：ａｂｃ＠ｅｘａｍｐｌｅ．ｃｏｍ", "邮箱：<EMAIL>"),
        ("服务器 192.168.1.1 已重启", "服务器 <IP> 已重启"),
    ],
)
def test_forms_are_masked_in_the_original_text(text, masked):
    assert mask_pii(text) == masked


@pytest.mark.parametrize(
    "text",
    [
        "1998年1月1日，全年国内生产总值达74772亿元，比上年增长8.8%。",
        "全市共有电话用户3560000户，其中移动电话用户2100000户。",  # a count after 电话
        "订单号：20230512183045123456，快递单号SF1234567890123。",
        "邮编：100081，ISBN 978-7-02-000220-7，定价：39.80元。",
        "４０６．４５１８．９１１６７１０９０７９８５９２",  # a statistics table line (passes Luhn by chance)
        "11010519491231002Y 11010519491231003X",  # no valid ID check digit
    ],
)
def test_numbers_that_are_not_pii_stay(text):
    assert mask_pii(text) == text


def test_offsets_map_back_to_the_original():
    text = "热线：（０１０）６５０９１０４０，手机：１３８００１３８０００。"
    view = width_normalised(text)
    assert len(view) == len(text)
    spans = pii_spans(text)
    assert [text[s.start : s.end] for s in spans] == ["（０１０）６５０９１０４０", "１３８００１３８０００"]


def test_checksums():
    assert id_check_digit("11010519491231002") == "X"
    assert luhn_ok("4111111111111111") and not luhn_ok("4111111111111112")


def test_recall_on_the_labelled_contact_lines():
    rows = [json.loads(line) for line in LABELLED.read_text("utf-8").splitlines()]
    total = caught = false_masks = 0
    for row in rows:
        spans = pii_spans(row["text"])
        covered = {i for s in spans for i in range(s.start, s.end)}
        labelled, pos = set(), 0
        for item in row["pii"]:
            start = row["text"].index(item["value"], pos)
            pos = start + len(item["value"])
            labelled |= set(range(start, pos))
            total += 1
            caught += set(range(start, pos)) <= covered
        false_masks += sum(1 for s in spans if not set(range(s.start, s.end)) & labelled)
    assert total >= 300 and sum(1 for r in rows if not r["pii"]) >= 25
    assert caught / total >= 0.95
    assert false_masks == 0


# every mask made on the People's Daily text, each checked by hand (bench/bench_pii.py --show):
# hotlines, phone, fax and telex numbers printed after 热线/电话/传真/电传/拨打; no date, amount or statistic
PEOPLE_DAILY_MASKS = {
    "９８１６８４３８８８",  # 另一条热线…具体介绍对外招商
    "（０７１７）５４０１２２０", "５４０１２１０",  # 联系电话（０７１７）５４０１２２０、５４０１２１０
    "６５０９１０４０", "６５０９２１４０", "６５０９２７４０",  # 电话：…，…。电传：…
    "０１０—６４３６５５６６",  # 本版新闻热线寻呼
    "１６０１３１５",  # 拨打１６０１３１５
    "０１０—６５０９２８２４",  # 传真电话
}


def test_people_daily_masks_only_contact_numbers():
    masks = [(line[s.start : s.end], s.label) for line in shared_lines("people_daily_1998_paragraphs.txt.zst")
             for s in pii_spans(line)]
    assert {value for value, _ in masks} == PEOPLE_DAILY_MASKS
    assert {label for _, label in masks} == {"PHONE"}
