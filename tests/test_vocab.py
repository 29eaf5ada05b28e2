import pytest

from cdt.errors import CdtError
from cdt.vocab import MASK_ID, NULL_ID, PAD_ID, Vocab


def test_roundtrip_and_specials_first():
    v = Vocab.from_text("hello world")
    assert len(v) == 3 + len(set("hello world"))
    ids = v.encode("hello")
    assert min(ids) >= 3 and v.decode(ids) == "hello"
    assert v.decode([MASK_ID, *v.encode("he"), NULL_ID, PAD_ID]) == "_he"


def test_unknown_characters_are_named():
    v = Vocab.from_text("abc")
    with pytest.raises(CdtError, match="'x', 'y'"):
        v.encode("axbyx")


def test_encode_array_matches_encode():
    v = Vocab.from_text("The quick brown fox: é, ü!\n")
    text = "quick é fox!\n"
    assert v.encode_array(text).tolist() == v.encode(text)
    with pytest.raises(CdtError, match="'Z'"):
        v.encode_array("Zebra")


def test_emittable_never_includes_mask_or_pad():
    v = Vocab.from_text("ab")
    ok = v.emittable()
    assert not ok[MASK_ID] and not ok[PAD_ID] and not ok[NULL_ID] and ok[3:].all()
    assert v.emittable(allow_null=True)[NULL_ID]


def test_dict_roundtrip():
    v = Vocab.from_text("xyz\n")
    assert Vocab.from_dict(v.to_dict()) == v
