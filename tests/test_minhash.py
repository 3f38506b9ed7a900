"""Hashing-form normalisation, vectorised MinHash signatures and LSH banding (no Beam)."""

from __future__ import annotations

import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cpm.pipeline import minhash

ARTICLE = (
    "国家统计局今天发布数据，今年前三季度国内生产总值同比增长百分之七点八，经济运行总体平稳。"
    "专家认为，消费对经济增长的贡献继续提高，发展的协调性进一步增强。\n"
    "与此同时，各地加快推进产业结构调整，高新技术产业保持较快增长，就业形势基本稳定，居民收入稳步提高。"
)


def random_text(rng: random.Random, length: int) -> str:
    return "".join(chr(rng.randrange(0x4E00, 0x9FA5)) for _ in range(length))


def test_tables_and_converter_are_built_once_per_process():
    """The per-code-point tables (about a second to build), OpenCC's converter and the permutations are
    made once and reused by every call (first here: a mutant that rebuilds them per call fails at once, not slowly)."""
    assert minhash.fold_tables() is minhash.fold_tables()
    assert minhash._t2s() is minhash._t2s()
    assert minhash.permutations(64, 3) is minhash.permutations(64, 3)  # per (num_perm, seed)


def test_hashing_form_folds_width_punctuation_whitespace_and_script():
    base = minhash.normalize_for_hash(ARTICLE)
    assert "，" not in base and "\n" not in base and "国家统计局" in base
    half_width = ARTICLE.replace("，", ",").replace("。", ".")
    reflowed = "　　" + ARTICLE.replace("\n", "\n\n  ").replace("。", "。 \r\n")
    traditional = "國家統計局今天發佈數據，今年前三季度國內生產總值同比增長百分之七點八，經濟運行總體平穩。" + ARTICLE[ARTICLE.index("专家") :]
    for variant in (half_width, reflowed, traditional):
        assert minhash.normalize_for_hash(variant) == base
    assert minhash.normalize_for_hash("ＡＢＣ１２３《书名》<书名>") == "abc123书名书名"


def test_traditional_variant_made_by_opencc_has_the_same_hashing_form():
    import opencc

    traditional = opencc.OpenCC("s2t").convert(ARTICLE)
    assert traditional != ARTICLE
    assert minhash.normalize_for_hash(traditional) == minhash.normalize_for_hash(ARTICLE)


def test_signatures_are_deterministic_and_batch_independent():
    rng = random.Random(3)
    texts = [random_text(rng, n) for n in (0, 1, 4, 5, 6, 300, 2500)] + [ARTICLE, "，。 \n"]
    batch = minhash.signatures(texts, num_perm=64, ngram=5)
    assert batch.shape == (len(texts), 64) and batch.dtype == np.uint32
    for text, row in zip(texts, batch):
        np.testing.assert_array_equal(minhash.signature(text, num_perm=64, ngram=5), row)
    np.testing.assert_array_equal(batch, minhash.signatures(texts, num_perm=64, ngram=5))
    assert (batch[0] == minhash.EMPTY_HASH).all() and (batch[-1] == minhash.EMPTY_HASH).all()
    assert not (batch[1] == minhash.EMPTY_HASH).all()  # shorter than ngram: one shingle
    assert not np.array_equal(batch[5], minhash.signatures(texts, num_perm=64, ngram=5, seed=2)[5])


def test_digests_identify_exact_duplicates_after_normalisation():
    _, digests = minhash.sign_batch([ARTICLE, ARTICLE.replace("，", ","), ARTICLE + "补"])
    assert digests[0] == digests[1] != digests[2]


@pytest.mark.parametrize("num_perm", [128, 256])
def test_estimates_track_exact_jaccard(num_perm):
    rng = random.Random(num_perm)
    errors = []
    for _ in range(40):
        text = random_text(rng, 1200)
        shift = rng.randrange(0, 400)
        other = text[shift:] + random_text(rng, shift)
        exact = minhash.exact_jaccard(text, other, 5)
        estimate = minhash.estimated_jaccard(minhash.signature(text, num_perm), minhash.signature(other, num_perm))
        errors.append(estimate - exact)
    errors = np.array(errors)
    std = np.sqrt(0.25 / num_perm)  # the largest standard deviation of the estimator
    assert abs(errors.mean()) < 2.5 * std / np.sqrt(len(errors)) + 0.01  # unbiased
    assert np.abs(errors).max() < 4 * std


def test_permutation_rows_use_the_whole_table_of_windows():
    # a shingle that crosses two texts of a batch must not exist: swapping batch order changes nothing
    a, b = "甲乙丙丁戊己庚辛", "子丑寅卯辰巳午未"
    together = minhash.signatures([a, b], 32, 3)
    np.testing.assert_array_equal(together[::-1], minhash.signatures([b, a], 32, 3))


@settings(max_examples=40, deadline=None)
@given(st.text(alphabet="的一是在不了有和人这中大为上个国我以要他时来用们生到作地于出就分对成会可主发年动同工也能下过子说产种面而方后多定行学法所民得经十三之进着等部度家电力里如水化高自二理起小物现实加量都两体制机当使点从业本去把性好应开它合还因由其些然前外天政四日那社义事平形相全表间样与关各重新线内数正心反你明看原又么利比或但质气第向道命此变条只没结解问意建月公无系军很情者最立代想已通并提直题党程展五果料象员革位入常文总次品式活设及管特件长求老头基资边流路级少图山统接知较将组见计别她手角期根论运农指几九区强放决西被干做必战先回则任取据处理府研质", min_size=20, max_size=300))
def test_whitespace_and_punctuation_never_change_a_signature(text):
    rng = random.Random(len(text))
    noisy = "".join(ch + (rng.choice(["", " ", "\n", "，", ",", "。", "　"]) if rng.random() < 0.2 else "") for ch in text)
    np.testing.assert_array_equal(minhash.signature(text, 32), minhash.signature(noisy, 32))


def lsh_recall(similarity: float, bands: int, rows: int) -> float:
    """The probability that banding makes a pair a candidate, written out here: 1 - (1 - s^r)^b."""
    return 1.0 - (1.0 - similarity**rows) ** bands


@pytest.mark.parametrize("threshold", [0.5, 0.7, 0.8, 0.9])
@pytest.mark.parametrize("num_perm", [64, 128, 256])
def test_lsh_bands_are_derived_from_the_threshold(threshold, num_perm):
    bands, rows = minhash.lsh_bands(threshold, num_perm)
    # the most rows per band whose num_perm // rows bands still reach the recall target
    best = max(r for r in range(1, num_perm + 1) if lsh_recall(threshold, num_perm // r, r) >= 0.999)
    assert (bands, rows) == (num_perm // best, best)
    assert lsh_recall(threshold, bands, rows) >= 0.999 and lsh_recall(threshold, num_perm // (rows + 1), rows + 1) < 0.999
    assert lsh_recall(0.1, bands, rows) < 0.05 or threshold <= 0.6  # unrelated texts rarely meet
    loose = max(r for r in range(1, num_perm + 1) if lsh_recall(threshold, num_perm // r, r) >= 0.95)
    assert minhash.lsh_bands(threshold, num_perm, 0.95) == (num_perm // loose, loose)
    for s in (0.0, 0.3, threshold, 0.99, 1.0):
        assert minhash.candidate_probability(s, bands, rows) == pytest.approx(lsh_recall(s, bands, rows), abs=1e-12)


def test_lsh_bands_for_the_default_threshold():
    assert minhash.lsh_bands(0.8, 128) == (25, 5)  # 1 - (1 - 0.8^5)^25 = 0.99995
    assert lsh_recall(0.8, 25, 5) == pytest.approx(0.99995, abs=1e-5)
    assert lsh_recall(0.8, 18, 7) < 0.999
    assert minhash.lsh_bands(0.01, 16) == (16, 1)  # not even 1 row per band reaches 0.999: the most bands
    for recall in (1.0, 0.0, -0.5):
        with pytest.raises(ValueError, match="min_recall must be in"):
            minhash.lsh_bands(0.8, 128, min_recall=recall)


def test_higher_thresholds_give_more_rows_per_band():
    rows = [minhash.lsh_bands(t, 128)[1] for t in (0.5, 0.7, 0.8, 0.9, 0.95)]
    assert rows == sorted(rows) and rows[0] < rows[-1]
    with pytest.raises(ValueError):
        minhash.lsh_bands(1.0, 128)


SIMPLIFIED = "的一是在不了有和人这中大为上个国我以要他时来用们生到作地于出就分对成会可主发年动同工也能下过子说产种面而方后多定行学法所民得经十三之进着等部度家电力里如水化高自二理起小物现实加量都两体制机当使点从业本去把性好应开它合还因由其些然前外天政四日那社义事平形相全表间样与关各重新线内数正心反你明看原又么利比或但质气第向道命此变条只没结解问意建月公无系军很情者最立代想已通并提直题党程展五果料象员"


def substring_jaccard(a: str, b: str, n: int) -> float:
    """Jaccard of the plain sets of n-character substrings (a text shorter than n is one shingle)."""
    def shingles(text: str) -> set[str]:
        return {text[i : i + n] for i in range(len(text) - n + 1)} if len(text) >= n else ({text} if text else set())

    set_a, set_b = shingles(a), shingles(b)
    return 1.0 if not set_a | set_b else len(set_a & set_b) / len(set_a | set_b)


@pytest.mark.parametrize("ngram", [1, 3, 5])
def test_exact_jaccard_matches_plain_substring_sets(ngram):
    rng = random.Random(4 + ngram)
    pairs = [("甲乙", "甲乙丙"), ("甲乙", "甲乙"), ("", "子丑寅卯辰")]
    for _ in range(30):
        text = "".join(rng.choice(SIMPLIFIED[:40]) for _ in range(rng.randrange(0, 120)))  # a small alphabet: repeats
        cut = rng.randrange(0, len(text) + 1)
        other = text[:cut] + "".join(rng.choice(SIMPLIFIED) for _ in range(rng.randrange(0, 30))) + text[cut + rng.randrange(0, 20) :]
        pairs.append((text, other))
    for a, b in pairs:
        assert minhash.normalize_for_hash(a) == a and minhash.normalize_for_hash(b) == b  # the hashing form is the text
        assert minhash.exact_jaccard(a, b, ngram) == pytest.approx(substring_jaccard(a, b, ngram), abs=1e-12), (a, b)
    # punctuation and spaces are not part of the hashing form, so not of the shingles
    assert minhash.exact_jaccard("甲，乙 丙。丁戊", "甲乙丙丁戊", 3) == 1.0
    assert minhash.exact_jaccard("", "，。") == 1.0 and minhash.exact_jaccard("", "甲乙丙丁戊己") == 0.0


def test_borderline_margin_follows_the_estimator():
    assert minhash.estimate_std(0.8, 128) == pytest.approx(0.0354, abs=1e-4)
    assert minhash.borderline_margin(0.8, 128) == pytest.approx(4 * 0.0354, abs=1e-3)
    assert minhash.borderline_margin(0.8, 512) == pytest.approx(minhash.borderline_margin(0.8, 128) / 2)


def test_defaults_are_128_permutations_of_5_grams():
    batch = minhash.signatures([ARTICLE, "甲乙"])
    assert batch.shape == (2, 128)
    np.testing.assert_array_equal(minhash.signature(ARTICLE), minhash.signatures([ARTICLE], 128, 5)[0])
    np.testing.assert_array_equal(batch[0], minhash.signature(ARTICLE, 128, 5))
    np.testing.assert_array_equal(minhash.sign_batch([ARTICLE])[0][0], batch[0])


def test_combining_marks_compose_before_hashing():
    """A decomposed accent (e + U+0301) has the hashing form of the composed letter, and so the same shingles."""
    assert minhash.normalize_for_hash("cafe\u0301") == minhash.normalize_for_hash("caf\u00e9") == "caf\u00e9"
    assert minhash.normalize_for_hash("\u1100\u1161") == minhash.normalize_for_hash("\uac00")  # Hangul jamo


def test_signatures_and_digests_are_pinned():
    """Signatures saved by one build are compared with a later build's (HASH_SCHEME): the values must not drift."""
    assert minhash.HASH_SCHEME == "cpm-minhash-v1"
    assert minhash.signature(ARTICLE)[:8].tolist() == [58554062, 97696359, 8199969, 21460069, 13238011, 57275064,
                                                       24409965, 32606515]
    assert minhash.signature("甲乙")[:4].tolist() == [738478411, 1074837305, 2288329075, 1960922195]
    [digest] = minhash.sign_batch([ARTICLE])[1]
    assert digest.hex() == "25d2273399e60889930d184ee8e97bbe"


def test_code_points_whose_nfkc_is_several_are_expanded():
    assert minhash.normalize_for_hash("ﬁle ㍿") == "file株式会社"  # a ligature, a squared word
    assert minhash.exact_jaccard("ﬁnance", "finance") == 1.0


def test_signature_sizes_must_be_positive():
    for options in (dict(num_perm=0), dict(ngram=0), dict(num_perm=-1)):
        with pytest.raises(ValueError, match="must be >= 1"):
            minhash.signatures([ARTICLE], **options)
    assert minhash.signatures([ARTICLE], num_perm=1, ngram=1).shape == (1, 1)


def test_exact_jaccard_uses_5_grams_by_default():
    a, b = "甲乙丙丁戊己庚辛", "甲乙丙丁戊己庚子"
    assert minhash.exact_jaccard(a, b) == minhash.exact_jaccard(a, b, 5) == substring_jaccard(a, b, 5) != substring_jaccard(a, b, 4)


def test_a_signature_is_the_minimum_over_every_shingle():
    """MinHash of a set is the element-wise minimum of its members' MinHashes: with 5-grams,
    "甲乙丙丁戊己" has exactly the shingles "甲乙丙丁戊" and "乙丙丁戊己" (each a one-shingle text)."""
    whole, first, last = minhash.signatures(["甲乙丙丁戊己", "甲乙丙丁戊", "乙丙丁戊己"])
    np.testing.assert_array_equal(whole, np.minimum(first, last))
    assert not np.array_equal(whole, first) and not np.array_equal(whole, last)


def test_thresholds_must_be_inside_0_1():
    for threshold in (0.0, 1.0, -0.2):
        with pytest.raises(ValueError, match="threshold must be in"):
            minhash.lsh_bands(threshold, 128)


# -- the per-code-point table, at the ends of every range it treats specially --------------------
# Unicode blocks (Blocks.txt), written out here rather than taken from the module.
HANGUL_JAMO_BLOCKS = ((0x1100, 0x11FF), (0x3130, 0x318F))  # Hangul Jamo, Hangul Compatibility Jamo
TABLE_END = 0x32000  # documented: the table covers planes 0-3; code points above map to themselves


def table_oracle(cp: int) -> tuple[int, bool]:
    """(hashing form, needs the whole-text path) of one code point, from the documented rules:
    NFKC when that is one code point, then OpenCC t2s of that character alone, then lower case;
    deleted (0) when the result is punctuation, a symbol, a space or a control / unassigned code
    point. Flagged: NFKC of several code points, marks, Hangul jamo, and characters t2s changes."""
    import unicodedata

    import opencc

    ch = chr(cp)
    nfkc = unicodedata.normalize("NFKC", ch)
    flagged = len(nfkc) != 1 or unicodedata.category(ch)[0] == "M"
    flagged |= any(lo <= cp <= hi for lo, hi in HANGUL_JAMO_BLOCKS)
    single = nfkc if len(nfkc) == 1 else ch
    simple = opencc.OpenCC("t2s").convert(single)
    if len(simple) == 1 and simple != single:
        flagged, single = True, simple
    if unicodedata.category(single)[0] in "PSZC":
        return 0, flagged
    lower = single.lower()
    return ord(lower if len(lower) == 1 else single), flagged


RANGE_ENDS = (0x1100, 0x1200, 0x3130, 0x3190, 0x3400, 0x4DC0, 0x4E00, 0xA000, 0xF900, 0xFB00, 0x20000, 0x2FA20,
              0x30000, 0x3134B, TABLE_END)


def test_fold_table_follows_its_definition_at_every_range_end():
    fold, needs_whole_text = minhash.fold_tables()
    assert len(fold) == len(needs_whole_text) == TABLE_END
    samples = [ord(c) for c in "aAＡ１，。 \n\u3000ﬁ㍿\u0301é國国們们瞭ㄱ가\u1161豈" + "\U00020000"]
    points = sorted({cp for end in RANGE_ENDS for cp in range(end - 2, end + 2) if cp < TABLE_END} | set(samples))
    wrong = [(hex(cp), (int(fold[cp]), bool(needs_whole_text[cp])), table_oracle(cp)) for cp in points
             if (int(fold[cp]), bool(needs_whole_text[cp])) != table_oracle(cp)]
    assert not wrong
    # the boundary code points themselves, spelled out: jamo flagged, their neighbours not
    assert needs_whole_text[[0x1100, 0x11FF, 0x3131, 0x318E]].all()
    assert not needs_whole_text[[0x10FF, 0x1200, 0x312F, 0x3190, ord("a"), ord("国")]].any()


def test_code_points_beyond_the_table_map_to_themselves():
    import unicodedata

    beyond = "\U00032000\U0003FFFD\U000E0100\U0010FFFD"  # plane 3 past the table, a variation selector, private use
    assert minhash.normalize_for_hash("甲" + beyond + "乙") == "甲" + beyond + "乙"
    assert minhash.normalize_for_hash("甲\U00032000") == "甲\U00032000"  # the first past the table, highest in its text
    last = "\U00031FFF"  # the last code point inside the table follows the category rule
    assert minhash.normalize_for_hash("甲" + last) == "甲" + ("" if unicodedata.category(last)[0] in "PSZC" else last)
    sig = minhash.signatures(["甲乙" + beyond, "甲乙"], 16, 2)
    assert not np.array_equal(sig[0], sig[1])


def test_traditional_text_is_converted_as_a_whole():
    """A text holding a traditional character goes through OpenCC t2s as a whole (phrase-aware:
    瞭解 -> 了解 although 瞭 alone stays 瞭); a single traditional character is converted too."""
    import opencc

    t2s = opencc.OpenCC("t2s")
    for text in ("我們瞭解", "國", "發", "乾燥的頭髮"):
        assert minhash.normalize_for_hash(text) == t2s.convert(text), text
    assert minhash.normalize_for_hash("我們瞭解") == "我们了解"


def test_lsh_bands_accept_a_recall_exactly_at_the_target():
    """At 0.5 with 2 permutations, 1 band of 2 rows gives exactly 1 - (1 - 0.5^2)^1 = 0.25 (a
    float without rounding): a target of 0.25 is met, so the most rows per band win."""
    assert lsh_recall(0.5, 1, 2) == 0.25
    assert minhash.lsh_bands(0.5, 2, min_recall=0.25) == (1, 2)
    assert minhash.lsh_bands(0.5, 2, min_recall=0.2500001) == (2, 1)


def test_a_text_with_no_shingles_has_the_all_ones_signature():
    for text in ("", "，。 \n"):  # an empty hashing form has no shingles
        assert minhash.shingle_hashes(text, 5).size == minhash.shingle_set(text, 5).size == 0
    assert minhash.signature("", 8).tolist() == [2**32 - 1] * 8 == minhash.signature("，。 \n", 8).tolist()
    signatures, digests = minhash.sign_batch([], 8)
    assert signatures.shape == (0, 8) and digests == []


def test_signature_of_a_long_text_is_the_minimum_over_its_pieces():
    """A text of more shingles than one hashing matrix holds (8,192) has the signature of the
    element-wise minimum over pieces that share n - 1 characters (together: the same shingles)."""
    rng = random.Random(9)
    text = random_text(rng, 20000)

    def over_pieces(text: str) -> np.ndarray:
        pieces = [text[start : start + 1000 + 4] for start in range(0, len(text) - 4, 1000)]
        return np.minimum.reduce([minhash.signature(piece, 32) for piece in pieces])

    expected = over_pieces(text)
    np.testing.assert_array_equal(minhash.signature(text, 32), expected)
    batch = minhash.signatures(["甲乙", text, "丙", text[:9001]], 32)
    np.testing.assert_array_equal(batch[1], expected)
    np.testing.assert_array_equal(batch[3], over_pieces(text[:9001]))
    assert not np.array_equal(batch[3], expected)
