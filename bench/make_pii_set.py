"""Writes ``tests/data/pii_contact_lines.jsonl``: a labelled set of realistic contact lines.

Each line of the output is ``{"text": ..., "pii": [{"label": ..., "value": ...}], "kind": ...}``:
``value`` is the exact substring of ``text`` that must be masked (``pii`` is empty for
the negative lines: dates, amounts, statistics, order and tracking numbers, postcodes,
ISBNs and the like, which must stay). The lines are written by hand as templates in the
styles seen on Chinese pages (classified ads, shop pages, notices, forum posts, business
cards, résumés, customer-service chats, news items); the numbers are drawn at random but
well-formed: mobile prefixes in use, real area codes with 7- or 8-digit local numbers,
resident ID numbers with a real region code, a valid date and a correct check digit, bank
card numbers with real issuer prefixes and a correct Luhn digit. Each number is written in
one of the ways people write it (groups, dashes, spaces, full-width digits, +86, brackets,
extensions). Hard cases are kept on purpose, including forms the masker is not expected to
catch (digits in Chinese numerals, spaced-out digits, obfuscated e-mail addresses).

Usage: python bench/make_pii_set.py [--seed 12] [--out tests/data/pii_contact_lines.jsonl]
"""

from __future__ import annotations

import argparse
import json
import random
import re
from pathlib import Path

MOBILE_PREFIXES = [*range(130, 140), 145, 147, *range(150, 154), *range(155, 160), 166, *range(170, 179),
                   *range(180, 190), 191, 198, 199]
AREA_8 = ["010", "021", "020", "022", "023", "024", "025", "027", "028", "029", "0755", "0571", "0512", "0532", "0591"]
AREA_7 = ["0717", "0898", "0931", "0871", "0351", "0471", "0391", "0746", "0913", "0599", "0477"]
REGIONS = ["110105", "310104", "440305", "420106", "510107", "330106", "320102", "370202", "610113", "500103",
           "230102", "350203", "430104", "410105", "130102", "450103", "520102", "620102", "150102", "652801"]
CARD_PREFIXES = ["622202", "621700", "622848", "621661", "622588", "622609", "621483", "436742", "518710",
                 "622700", "621226", "625965", "603367", "621799"]
FULL_WIDTH = str.maketrans("0123456789-+()", "０１２３４５６７８９－＋（）")
WORDS = ["zhang", "li.ming", "wangfang", "chen_jie", "service", "hr", "liuyang88", "xiaomei", "info", "zhaolei",
         "sunny.wu", "kefu", "tom_huang", "job", "admin"]
DOMAINS = ["example.com", "example.cn", "example.com.cn", "example.net", "example.org", "mail.example.edu.cn"]
NUMERALS = dict(zip("0123456789", "〇一二三四五六七八九"))


def check_digit(first17: str) -> str:
    weights = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
    return "10X98765432"[sum(int(d) * w for d, w in zip(first17, weights)) % 11]


def luhn_digit(body: str) -> str:
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch)
        if i % 2 == 0:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return str((10 - total % 10) % 10)


class Numbers:
    """Random well-formed numbers in the ways people write them."""

    def __init__(self, rng: random.Random):
        self.rng = rng

    def digits(self, n: int) -> str:
        return "".join(self.rng.choice("0123456789") for _ in range(n))

    def mobile(self, style: str | None = None) -> str:
        d = f"{self.rng.choice(MOBILE_PREFIXES)}{self.digits(8)}"
        style = style or self.rng.choice(["plain"] * 5 + ["space", "dash", "plus", "plus_space", "fw", "00", "dot"])
        return {
            "plain": d, "space": f"{d[:3]} {d[3:7]} {d[7:]}", "dash": f"{d[:3]}-{d[3:7]}-{d[7:]}",
            "plus": f"+86{d}", "plus_space": f"+86 {d[:3]} {d[3:7]} {d[7:]}", "fw": d.translate(FULL_WIDTH),
            "00": f"0086-{d}", "dot": f"{d[:3]}.{d[3:7]}.{d[7:]}", "paren86": f"(+86){d}",
            "numerals": "".join(NUMERALS[c] for c in d), "spaced": " ".join(d),
        }[style]

    def local(self, area: str) -> str:
        n = 8 if area in AREA_8 else 7
        return self.rng.choice("2345678") + self.digits(n - 1)

    def landline(self, style: str | None = None) -> str:
        area = self.rng.choice(AREA_8 + AREA_7)
        local = self.local(area)
        half = len(local) // 2
        style = style or self.rng.choice(["dash"] * 4 + ["paren", "space", "plain", "fw_paren", "plus", "ext", "grouped"])
        return {
            "dash": f"{area}-{local}", "paren": f"({area}){local}", "space": f"{area} {local}", "plain": f"{area}{local}",
            "fw_paren": f"（{area}）{local}".translate(FULL_WIDTH), "plus": f"+86-{area[1:]}-{local}",
            "ext": f"{area}-{local}{self.rng.choice(['转', '-', ' 分机 '])}{self.digits(self.rng.choice([3, 4]))}",
            "grouped": f"{area}-{local[:half]} {local[half:]}", "cn_paren": f"（{area}）{local}",
            "plus_zero": f"+86 (0){area[1:]} {local}",
        }[style]

    def local_only(self, style: str | None = None) -> str:
        local = self.local(self.rng.choice(AREA_8 + AREA_7))
        style = style or self.rng.choice(["plain"] * 4 + ["dash", "fw"])
        half = len(local) // 2
        return {"plain": local, "dash": f"{local[:half]}-{local[half:]}", "fw": local.translate(FULL_WIDTH)}[style]

    def hotline(self) -> str:
        d = self.rng.choice(["400", "800"]) + self.digits(7)
        return self.rng.choice([f"{d[:3]}-{d[3:6]}-{d[6:]}", d, f"{d[:3]} {d[3:6]} {d[6:]}"])

    def qq(self) -> str:
        return self.rng.choice("123456789") + self.digits(self.rng.choice([4, 5, 6, 7, 8, 8, 9, 9, 10]))

    def id18(self, style: str | None = None) -> str:
        year = self.rng.randint(1940, 2008)
        month, day = self.rng.randint(1, 12), self.rng.randint(1, 28)
        first17 = f"{self.rng.choice(REGIONS)}{year}{month:02d}{day:02d}{self.digits(3)}"
        value = first17 + check_digit(first17)
        style = style or self.rng.choice(["plain"] * 6 + ["fw", "space", "lower_x"])
        if style == "fw":
            return value.translate(FULL_WIDTH).replace("X", "Ｘ")
        if style == "space":
            return f"{value[:6]} {value[6:14]} {value[14:]}"
        if style == "lower_x" and value.endswith("X"):
            return value[:-1] + "x"
        return value

    def id15(self) -> str:
        return f"{self.rng.choice(REGIONS)}{self.rng.randint(40, 84)}{self.rng.randint(1, 12):02d}{self.rng.randint(1, 28):02d}{self.digits(3)}"

    def card(self, style: str | None = None) -> str:
        prefix = self.rng.choice(CARD_PREFIXES)
        length = 16 if prefix[0] in "45" else self.rng.choice([16, 19, 19])
        body = prefix + self.digits(length - len(prefix) - 1)
        value = body + luhn_digit(body)
        style = style or self.rng.choice(["plain", "plain", "space", "space", "dash", "fw"])
        groups = " ".join(value[i : i + 4] for i in range(0, len(value), 4))
        return {"plain": value, "space": groups, "dash": groups.replace(" ", "-"), "fw": value.translate(FULL_WIDTH)}[style]

    def email(self, style: str | None = None) -> str:
        value = f"{self.rng.choice(WORDS)}{self.rng.choice(['', '', str(self.rng.randint(1, 999))])}@{self.rng.choice(DOMAINS)}"
        if style == "fw":
            return value.translate(str.maketrans("abcdefghijklmnopqrstuvwxyz.@_0123456789", "ａｂｃｄｅｆｇｈｉｊｋｌｍｎｏｐｑｒｓｔｕｖｗｘｙｚ．＠＿０１２３４５６７８９"))
        if style == "hash":
            return value.replace("@", "#")
        if style == "at":
            return value.replace("@", " at ").replace(".", " dot ")
        return value

    def ip(self) -> str:
        return ".".join(str(self.rng.randint(1, 254)) for _ in range(4))


# {slot} or {slot:style}; label of each slot
LABELS = {"mobile": "PHONE", "landline": "PHONE", "local": "PHONE", "hotline": "PHONE", "qq": "QQ", "id": "ID",
          "id15": "ID", "card": "CARD", "email": "EMAIL", "ip": "IP"}

TEMPLATES = """
# classified ads, rentals, second-hand
出租：朝阳区两居室，南北通透，月租4500元，押一付三，联系电话：{mobile}，非诚勿扰。
转让九成新电动车一辆，价格面议，有意者请致电{mobile}（王先生）。
急招服务员3名，包吃住，月薪3000-4500元。联系人：刘经理 {mobile}
本店长期回收二手空调、冰箱，上门服务，电话{landline}，手机{mobile}。
求购二手钢琴一台，预算一万元以内，联系QQ：{qq}。
家教：北师大在读研究生，可辅导初高中数学物理，电话 {mobile}，QQ {qq}
寻物启事：本人于3月5日在公交车上遗失黑色钱包一个，内有身份证（{id}）及银行卡若干，拾到者请联系{mobile}，必有重谢！
招租：临街商铺120平方米，适合餐饮，联系方式：{landline}。
房东直租，拎包入住，看房请打{mobile}，微信同号。
出售：2015年产轿车一辆，行驶8万公里，电话：{mobile:fw}
# shops, services, hotlines
本店地址：和平路128号，营业时间9:00-21:00，订餐电话：{landline}。
全国统一服务热线：{hotline}，工作日8:30-17:30。
客服电话 {hotline}，投诉电话 {landline}
如有疑问请拨打客服热线{hotline}或发送邮件至{email}。
售后服务：{landline:ext}，传真：{landline}
订票电话：{local}、{local}，团体订票请提前三天预约。
电话：{local:fw}
联系电话（{landline:fw_paren}）
预约电话：{landline:paren}，地址：解放大道1277号。
咨询电话：{landline:grouped}（工作日）
欢迎来电垂询：{mobile:space}
业务联系：{mobile:dash}（李经理）
# notices, government, schools
举报电话：{landline}，举报邮箱：{email}。
报名时间为即日起至6月30日，报名咨询电话：{local}，联系人：张老师。
如对公示内容有异议，请于公示期内向区人社局反映，联系电话：{landline}。
市民可拨打{hotline}热线咨询办理流程。
值班室电话：{landline}；传真：{landline}。
招生办公室 电话：{landline:space} 邮箱：{email}
学校地址：人民路56号 邮编：430071 电话：{landline}
监督电话：{local}
疫情防控咨询电话：{landline}、{landline}、{mobile}
# business cards, letter heads
张伟 销售总监 手机：{mobile} 座机：{landline} 邮箱：{email}
Tel: {landline:plus}  Mobile: {mobile:plus_space}  E-mail: {email}
地址：深圳市南山区科技园 电话：{landline} 传真：{landline} 网址：www.example.com
联系人：陈女士 {mobile}
王先生，{local}
总机：{landline:ext}
T: {landline}  M: {mobile}
电话/传真：{landline}
# personal documents, forms, résumés
姓名：李娜 性别：女 身份证号：{id} 联系电话：{mobile}
身份证号码：{id:space}
身份证：{id:fw}
身份证号 {id15}（老证）
户主王建国，身份证号{id}，家庭住址：城关镇东街12号。
收款人：刘洋，开户行：工商银行，卡号：{card}
请将款项汇入以下账户：{card:space}（户名：张敏）
银行卡号：{card:dash}
退款已原路退回至尾号为{card}的银行卡。
我的工资卡是{card}，麻烦帮忙查一下。
本人求职意向：会计，联系方式 {mobile} / {email}
个人简历 手机：{mobile:fw} 邮箱：{email:fw}
# forum posts, chats, comments
有需要的可以加我QQ{qq}，备注来意。
QQ群：{qq}，欢迎同城驴友加入！
扣扣{qq}，晚上在线
加Q号{qq}详聊
企鹅号：{qq}
有问题私信或者q我：{qq}
我电话{mobile}，到了打给我。
你直接打我手机吧，{mobile:dot}
号码是{mobile}，记一下
快递到了没？我的号码{mobile}，放门卫就行。
帖子太长不看，联系邮箱{email}
我QQ号{qq}，微信号就是手机号{mobile}
服务器地址是{ip}，端口8080，用户名admin。
登录日志：{ip} 于 2023-05-01 12:03 登录
# news items with contact details
记者从市交通局获悉，市民如发现违规营运车辆，可拨打举报电话{landline}。
该活动报名截止到本月底，咨询电话：{landline}，{mobile}。
爱心人士如需捐助，可联系该校王老师，电话{mobile}。
失主可到城东派出所认领，联系电话{landline}。
# hard cases: the masker is not expected to catch all of these
电话号码是{mobile:numerals}
手机：{mobile:spaced}
有意者发邮件到{email:hash}（#换成@）
联系邮箱：{email:at}
电话：{landline:plus_zero}
电话：{landline}（白天），{mobile}（晚上）
联系电话{mobile}/{mobile}
电话:{local}
电话号码：{mobile:paren86}
""".strip()

NEGATIVES = """
1998年1月1日，国家统计局发布数据显示，全年国内生产总值达74772亿元，比上年增长8.8%。
截至2023年12月31日，全市常住人口为13064400人，比上年末增加59300人。
本次共发放补贴资金38475200元，惠及农户12563户。
订单号：20230512183045123456，请妥善保管。
您的快递单号为SF1234567890123，预计明日送达。
邮编：100081，地址：北京市海淀区中关村南大街5号。
ISBN 978-7-02-000220-7，定价：39.80元。
会议将于2024年3月15日14:30在市政府三楼会议室召开。
该项目总投资12.58亿元，建成后年产值可达35000万元。
本届运动会共有来自31个省区市的8563名运动员参加。
发票号码：04403180011、发票代码：144031900111，开票日期2022-08-16。
车牌号：京A·12345，车架号LSVAG2180E2100368。
合同编号：HT-2023-0458，金额：人民币壹拾贰万元整（¥120,000.00）。
1997年全省粮食总产量达到2650万吨，创历史最高水平。
房间号1203，密码锁初始密码123456，入住后请及时修改。
本期彩票开奖号码：05 12 18 23 27 31 + 09。
该股今日收于13.58元，成交量12563400股，换手率3.12%。
股票代码600519，2023年营业收入1476.94亿元。
商品编码6901234567892，规格500g×12袋。
全市共有电话用户3560000户，其中移动电话用户2100000户。
热线开通以来共受理群众来电125630件，办结率98.6%。
第九届全国人民代表大会第一次会议于1998年3月5日在北京开幕。
版本号 v2.13.0，发布于2024-01-15，修复了12个问题。
考生准考证号：202301010512，考场号：05，座位号：23。
一九九八年元月，全国共有国有企业职工10956万人。
学号：2021110512，班级：计算机2101班。
坐标：北纬39.9042度，东经116.4074度，海拔43.5米。
账户余额：12,563.80元，可用额度50,000元。
去年该县人均纯收入达到1860元，比1990年增长1.5倍。
IP地址段的划分遵循RFC 1918标准，例如私有地址以10开头。
""".strip()


def fill(template: str, numbers: Numbers) -> dict:
    pii, parts, last = [], [], 0
    for match in re.finditer(r"\{(\w+)(?::(\w+))?\}", template):
        slot, style = match.group(1), match.group(2)
        maker = {"mobile": numbers.mobile, "landline": numbers.landline, "local": numbers.local_only,
                 "hotline": lambda s=None: numbers.hotline(), "qq": lambda s=None: numbers.qq(),
                 "id": numbers.id18, "id15": lambda s=None: numbers.id15(), "card": numbers.card,
                 "email": numbers.email, "ip": lambda s=None: numbers.ip()}[slot]
        value = maker(style)
        parts.append(template[last : match.start()])
        parts.append(value)
        last = match.end()
        pii.append({"label": LABELS[slot], "value": value})
    parts.append(template[last:])
    return {"text": "".join(parts), "pii": pii}


def build(seed: int, rounds: int = 3) -> list[dict]:
    """Each template filled ``rounds`` times (fresh numbers and styles each time), then the negatives."""
    rng = random.Random(seed)
    numbers = Numbers(rng)
    rows, kind = [], ""
    for _ in range(rounds):
        for line in TEMPLATES.splitlines():
            if line.startswith("#"):
                kind = line[1:].strip()
                continue
            rows.append({**fill(line, numbers), "kind": kind})
    rows += [{"text": line, "pii": [], "kind": "negative"} for line in NEGATIVES.splitlines()]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=12)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "tests" / "data" / "pii_contact_lines.jsonl")
    args = parser.parse_args()
    rows = build(args.seed)
    with open(args.out, "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    n = sum(len(r["pii"]) for r in rows)
    print(f"{args.out}: {len(rows)} lines, {n} labelled values")


if __name__ == "__main__":
    main()
