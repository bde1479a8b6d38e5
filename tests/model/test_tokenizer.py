from __future__ import annotations

import pytest

import model

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cat", "sat", "on", "mat",
         "##s", ".", "play", "##ing", "!"]


def test_known_sentence_ids():
    tok = model.Tokenizer.from_vocab(VOCAB)
    # [CLS] the cat ##s sat play ##ing . [SEP], looked up by hand in VOCAB.
    assert tok.tokenize_ids(["The CATS sat playing."]) == [[2, 5, 6, 10, 7, 12, 13, 11, 3]]
    assert tok.tokenize_ids(["dog"]) == [[2, 1, 3]]


def test_padding_and_truncation_keep_sep():
    tok = model.Tokenizer.from_vocab(VOCAB)
    b = tok(["the cat sat on the mat .", "cat"], max_length=5)
    assert b.input_ids.tolist() == [[2, 5, 6, 7, 3], [2, 6, 3, 0, 0]]
    assert b.attention_mask.tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]
    assert b.truncated == [True, False] and b.lengths == [5, 3]


def test_from_dir_and_transformers_reads_our_files(tmp_path):
    transformers = pytest.importorskip("transformers")
    (tmp_path / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    tok = model.Tokenizer.from_dir(tmp_path)
    out = tmp_path / "saved"
    tok.save(out)
    hf = transformers.AutoTokenizer.from_pretrained(out)
    text = "the mats! playing on the cat"
    assert hf(text)["input_ids"] == tok.tokenize_ids([text])[0]
    assert model.Tokenizer.from_dir(out).tokenize_ids([text]) == tok.tokenize_ids([text])


def test_vocab_without_specials_is_refused():
    with pytest.raises(ValueError, match=r"\[MASK\]"):
        model.Tokenizer.from_vocab(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "a"])


def test_unicode_never_crashes():
    tok = model.Tokenizer.from_vocab(VOCAB)
    texts = ["😀🔥", "مرحبا", "a\u200bb", "e\u0301", "\x00\x07ctrl", "   "]
    for ids in tok.tokenize_ids(texts):
        assert ids[0] == 2 and ids[-1] == 3
