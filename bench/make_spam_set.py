"""Writes ``tests/data/repetition_spam.jsonl``: repetition spam pages the repetition filters must catch.

Each line is ``{"kind": ..., "text": ...}``. The pages are built the way such spam is made
(seeded, so the file is reproducible), from hand-written templates and vocabulary:

* ``templated``: SEO doorway pages, one sentence template filled with a city / service /
  product per line (「北京搬家公司哪家好？北京搬家公司电话……」);
* ``spun``: an advertising article rewritten several times by synonym substitution and
  sentence shuffling (article spinning), the versions pasted one after another;
* ``stuffed``: short text with a keyword phrase inserted into every sentence, plus keyword
  lists (「关键词：…,…,…」) and tag lines;
* ``listing``: product/price listings that repeat one pattern with a changing model number;
* ``repeated_block``: one advert or notice block pasted many times, with a little real text
  (People's Daily sentences when the shared corpus is there) around it;
* ``mixed``: real news paragraphs with spam blocks inserted between them (the hard case:
  about a third to half of the page is spam).

Usage: python bench/make_spam_set.py [--seed 6] [--per-kind 60] [--out tests/data/repetition_spam.jsonl]
"""

from __future__ import annotations

import argparse
import io
import json
import random
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "zh"

CITIES = ["北京", "上海", "广州", "深圳", "天津", "重庆", "成都", "武汉", "杭州", "南京", "西安", "长沙", "郑州", "济南",
          "青岛", "大连", "沈阳", "哈尔滨", "苏州", "无锡", "宁波", "厦门", "福州", "合肥", "南昌", "昆明", "贵阳", "南宁",
          "石家庄", "太原", "呼和浩特", "兰州", "乌鲁木齐", "海口", "东莞", "佛山", "温州", "徐州", "洛阳", "潍坊"]
DISTRICTS = ["朝阳区", "海淀区", "浦东新区", "天河区", "南山区", "和平区", "武侯区", "江汉区", "西湖区", "鼓楼区",
             "雁塔区", "岳麓区", "金水区", "历下区", "市南区", "中山区", "沈河区", "南岗区", "姑苏区", "滨湖区"]
SERVICES = ["搬家公司", "开锁公司", "管道疏通", "空调维修", "家电维修", "保洁公司", "装修公司", "婚纱摄影", "驾校",
            "英语培训", "会计培训", "代理记账", "注册公司", "律师事务所", "月嫂服务", "二手车回收", "除甲醛",
            "防水补漏", "网站建设", "物流公司"]
PRODUCTS = ["减肥药", "祛斑霜", "增高鞋", "净水器", "空气净化器", "按摩椅", "电动牙刷", "蓝牙耳机", "移动电源",
            "扫地机器人", "不锈钢水箱", "钢结构厂房", "PVC管材", "LED显示屏", "防盗门", "实木地板", "玻璃钢冷却塔"]
QUESTIONS = ["哪家好", "多少钱", "电话多少", "怎么样", "价格表", "排名", "哪里有", "收费标准", "联系方式", "地址在哪"]
PRAISE = ["专业", "正规", "口碑好", "价格实惠", "服务周到", "二十四小时上门", "信誉第一", "全市连锁", "免费上门", "质量保证"]
SYNONYMS = [
    ("专业", "资深", "正规", "权威"), ("公司", "企业", "机构", "单位"), ("价格", "费用", "收费", "报价"),
    ("优惠", "实惠", "便宜", "划算"), ("服务", "售后", "保障", "品质"), ("欢迎", "诚邀", "恭候", "期待"),
    ("咨询", "来电", "洽谈", "联系"), ("多年", "十余年", "数十年", "长期"), ("客户", "顾客", "用户", "消费者"),
    ("满意", "认可", "好评", "称赞"), ("质量", "品质", "做工", "材质"), ("选择", "挑选", "选购", "购买"),
]
AD_SENTENCES = [
    "我们公司是一家专业从事{p}生产与销售的企业，拥有多年的行业经验。",
    "公司始终坚持质量第一、客户至上的原则，产品价格优惠，服务周到。",
    "我们的{p}采用进口原材料，经过严格检测，质量稳定可靠。",
    "多年来，公司产品远销全国各地，深受广大客户的好评和信赖。",
    "如果您需要购买{p}，欢迎来电咨询，我们将竭诚为您服务。",
    "公司拥有专业的技术团队和完善的售后服务体系，让您选择无忧。",
    "选择我们就是选择放心，专业的{p}厂家值得您的信赖。",
    "现在下单即可享受厂家直销价格，数量有限，先到先得。",
]
AD_BLOCKS = [
    "【{p}厂家直销】品质保证，价格优惠，全国包邮，欢迎咨询订购！",
    "★★★本站长期供应{p}，量大从优，诚招各地代理商★★★",
    "温馨提示：购买{p}请认准官方正品，谨防假冒，咨询热线全天开通。",
    "{c}{s}，{q}？{c}{s}认准我们，{r}，{r}！",
]
FILLER = [
    "近年来，随着经济的快速发展，人们的生活水平不断提高。",
    "很多人在选择的时候都会比较犹豫，不知道应该从哪些方面考虑。",
    "下面我们就来详细介绍一下相关的知识，希望对大家有所帮助。",
    "总的来说，选择的时候一定要多比较，多了解，才能找到适合自己的。",
]


def read_paragraphs() -> list[str]:
    path = SHARED / "people_daily_1998_paragraphs.txt.zst"
    if not path.is_file():
        return FILLER * 10
    import zstandard

    with open(path, "rb") as raw, zstandard.ZstdDecompressor().stream_reader(raw) as stream:
        return [line.strip() for line in io.TextIOWrapper(stream, encoding="utf-8") if len(line.strip()) > 60]


def spin(text: str, rng: random.Random) -> str:
    for group in SYNONYMS:
        for word in group:
            if word in text and rng.random() < 0.7:
                text = text.replace(word, rng.choice(group))
    return text


def templated(rng: random.Random) -> str:
    service = rng.choice(SERVICES)
    places = rng.sample(CITIES + DISTRICTS, rng.randint(8, 25))
    patterns = rng.sample([
        "{c}{s}{q}？", "{c}{s}电话，{c}{s}{q}，{c}{s}就找我们。", "{c}{s}，{r}，{r}，欢迎来电。",
        "{c}专业{s}，{c}{s}价格，{c}{s}{q}。", "找{c}{s}，上本站，{c}{s}{r}。",
    ], rng.randint(1, 3))
    lines = [f"{service}{rng.choice(QUESTIONS)}？本站为您整理了各地{service}信息。"]
    for place in places:
        lines.append("".join(p.format(c=place, s=service, q=rng.choice(QUESTIONS), r=rng.choice(PRAISE)) for p in patterns))
    return "\n".join(lines)


def spun(rng: random.Random) -> str:
    product = rng.choice(PRODUCTS)
    base = [s.format(p=product) for s in rng.sample(AD_SENTENCES, rng.randint(4, 7))]
    versions = []
    for _ in range(rng.randint(3, 6)):
        sentences = [spin(s, rng) for s in base]
        if rng.random() < 0.5:
            rng.shuffle(sentences)
        versions.append("".join(sentences))
    return "\n".join(versions)


def stuffed(rng: random.Random) -> str:
    product, city = rng.choice(PRODUCTS), rng.choice(CITIES)
    keyword = rng.choice([product, f"{city}{product}", f"{product}{rng.choice(QUESTIONS)}"])
    keywords = [f"{keyword}{q}" for q in rng.sample(QUESTIONS, 6)] + [keyword] * 3
    sentences = [s.format(p=product) for s in rng.sample(AD_SENTENCES + FILLER, rng.randint(5, 9))]
    body = "".join(f"{keyword}，{s}" if rng.random() < 0.8 else s for s in sentences)
    lines = [f"{keyword}_{keyword}{rng.choice(QUESTIONS)}_{keyword}网", body, "关键词：" + ",".join(keywords)]
    if rng.random() < 0.5:
        lines.append("相关搜索：" + " ".join(f"{keyword}{q}" for q in rng.sample(QUESTIONS, 8)))
    return "\n".join(lines)


def listing(rng: random.Random) -> str:
    product = rng.choice(PRODUCTS)
    brand = rng.choice(["华科", "东方", "永盛", "宏达", "金源", "瑞丰", "恒通", "新世纪"])
    lines = [f"{brand}{product}价格表（{rng.randint(2010, 2024)}年最新报价）"]
    for _ in range(rng.randint(12, 35)):
        model = f"{rng.choice('ABCDEFHKMSTX')}{rng.choice('ABCDEFHKMSTX')}-{rng.randint(100, 9999)}"
        lines.append(f"{brand}{product} {model} 型号：{model} 价格：{rng.randint(50, 20000)}元 "
                     f"{rng.choice(['现货', '包邮', '促销', '热销'])} {brand}{product}{model}参数 {brand}{product}{model}图片")
    return "\n".join(lines)


def repeated_block(rng: random.Random, paragraphs: list[str]) -> str:
    product = rng.choice(PRODUCTS)
    block = rng.choice(AD_BLOCKS).format(p=product, c=rng.choice(CITIES), s=rng.choice(SERVICES),
                                         q=rng.choice(QUESTIONS), r=rng.choice(PRAISE))
    lines = [block] * rng.randint(6, 20)
    for _ in range(rng.randint(1, 2)):
        lines.insert(rng.randrange(len(lines)), rng.choice(paragraphs))
    return "\n".join(lines)


def mixed(rng: random.Random, paragraphs: list[str]) -> str:
    news = rng.sample(paragraphs, rng.randint(2, 4))
    spam = rng.choice([templated, spun, stuffed, listing])(rng).split("\n")
    lines = news + spam
    rng.shuffle(lines)
    return "\n".join(lines)


def build(seed: int, per_kind: int) -> list[dict]:
    rng = random.Random(seed)
    paragraphs = read_paragraphs()
    makers = {
        "templated": templated, "spun": spun, "stuffed": stuffed, "listing": listing,
        "repeated_block": lambda r: repeated_block(r, paragraphs), "mixed": lambda r: mixed(r, paragraphs),
    }
    return [{"kind": kind, "text": make(rng)} for kind, make in makers.items() for _ in range(per_kind)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=6)
    parser.add_argument("--per-kind", type=int, default=60)
    parser.add_argument("--out", type=Path, default=ROOT / "tests" / "data" / "repetition_spam.jsonl")
    args = parser.parse_args()
    rows = build(args.seed, args.per_kind)
    with open(args.out, "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(f"{args.out}: {len(rows)} pages, {sum(len(r['text']) for r in rows) / 1e3:.0f}k characters")


if __name__ == "__main__":
    main()
