from collections import Counter

import numpy as np
import pytest

from cdt.data import load_corpus
from cdt.errors import CdtError
from cdt.vocab import PAD_ID


@pytest.mark.parametrize("content, match", [
    (None, "not found"),
    (b"", "empty"),
    (b"  \n\t ", "empty"),
    (b"abc\x00def" * 10, "binary"),
    (b"caf\xe9 au lait, encore" * 3, "not valid UTF-8"),
])
def test_bad_files_give_one_line_errors_naming_the_file(tmp_path, content, match):
    path = tmp_path / "corpus.txt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(CdtError, match=match) as e:
        load_corpus(str(path), 32)
    assert str(path) in str(e.value) and "\n" not in str(e.value)


def test_windows_split_90_10_by_position(tmp_path):
    text = "".join(chr(ord("a") + i % 26) for i in range(1000))
    path = tmp_path / "abc.txt"
    path.write_text(text, encoding="utf-8")
    c = load_corpus(str(path), 16)
    assert c.info["train_chars"] == 900 and c.info["val_chars"] == 100 and c.records == []
    b = c.batch(step=3, batch_size=4, seed=0)
    assert b.ids.shape == (4, 16) and b.maskable.all() and not (b.ids == PAD_ID).any()
    for row in b.ids:  # every window is a contiguous slice of the training part
        s = c.vocab.decode(row)
        assert s in text[:900]
    val_rows = [c.vocab.decode(r) for vb in c.val_batches(8, 4) for r in vb.ids]
    assert len(val_rows) == 8 and all(s in text[900:] for s in val_rows)


def test_batches_are_a_pure_function_of_seed_and_step(tmp_path):
    c = load_corpus("toolcalls", 256, n_records=500, seed=0)
    a, b = c.batch(7, 8, seed=1), c.batch(7, 8, seed=1)
    assert np.array_equal(a.ids, b.ids)
    # ranks take disjoint rows of one global batch
    r0, r1 = c.batch(2, 4, seed=1, rank=0, world_size=2), c.batch(2, 4, seed=1, rank=1, world_size=2)
    rows0 = {tuple(r[r != PAD_ID].tolist()) for r in r0.ids}
    rows1 = {tuple(r[r != PAD_ID].tolist()) for r in r1.ids}
    assert not rows0 & rows1


def test_one_epoch_visits_every_row_once():
    c = load_corpus("toolcalls", 256, n_records=200, seed=0)
    n = len(c.train)
    key = lambda r: tuple(r[r != PAD_ID].tolist())
    seen = Counter(key(c.batch(s, 1, seed=2).ids[0]) for s in range(n))
    assert seen == Counter(key(r) for r in c.train.ids)


def test_length_groups_deal_the_same_rows_with_less_padding():
    c = load_corpus("toolcalls", 256, n_records=2000, seed=0)
    key = lambda r: tuple(r[r != PAD_ID].tolist())
    plain = [c.batch(s, 8, seed=4) for s in range(16)]
    grouped = [c.batch(s, 8, seed=4, length_groups=16) for s in range(16)]
    assert Counter(key(r) for b in plain for r in b.ids) == Counter(key(r) for b in grouped for r in b.ids)
    width = lambda bs: sum(b.ids.shape[1] for b in bs)
    assert width(grouped) < 0.9 * width(plain)
    again = [c.batch(s, 8, seed=4, length_groups=16) for s in range(16)]
    assert all(np.array_equal(a.ids, b.ids) for a, b in zip(grouped, again))
