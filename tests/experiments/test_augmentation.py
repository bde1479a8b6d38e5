"""The text only the teacher supervises: perturbed copies of the training texts and news sentences."""

from __future__ import annotations

import random

from experiments.pipeline import Recipe, baseline_of, unlabeled_for
from lab.datasets import write_splits
from training.augment import perturb


def _is_subsequence(small: list[str], big: list[str]) -> bool:
    it = iter(big)
    return all(w in it for w in small)


def test_a_perturbed_text_keeps_some_of_its_words_in_order():
    text = "the film is not nearly as clever as it thinks it is , but the cast is fun"
    words = text.split()
    rng = random.Random(0)
    outs = [perturb(text, rng) for _ in range(200)]
    for out in outs:
        kept = out.split()
        assert 2 <= len(kept) < len(words) and _is_subsequence(kept, words)
    spans = {" ".join(words[i:j]) for i in range(len(words)) for j in range(i + 2, len(words))}
    crops = [o for o in outs if o in spans]  # contiguous word spans
    assert 70 < len(crops) < 130  # both kinds of edit, about equally often
    assert len(set(outs)) > 100  # not the same few edits over and over
    assert [perturb(text, random.Random(0)) for _ in range(3)] == [perturb(text, random.Random(0))] * 3


def test_a_text_too_short_to_cut_comes_back_whole_on_one_line():
    assert perturb("great fun", random.Random(1)) == "great fun"
    assert perturb("great\nfun", random.Random(1)) == "great fun"  # one text, one line of the unlabeled file
    assert perturb("", random.Random(1)) == ""


def test_unlabeled_file_holds_news_and_perturbed_copies(tmp_path):
    texts = [f"review number {i} was quite good overall" for i in range(8)] + ["fine", "loved\tit"]
    train = write_splits({"train": [(t, i % 2) for i, t in enumerate(texts)]}, tmp_path)["train"]
    news = tmp_path / "news.txt"
    news.write_text("markets rose today\nrain is expected\n")
    files = {"train": train, "unlabeled": news}
    assert unlabeled_for(Recipe(augment=False, perturbed=0.0), files, tmp_path / "a.txt", 0) is None
    assert unlabeled_for(Recipe(augment=True, perturbed=0.0), files, tmp_path / "b.txt", 0) == str(news)
    lines = open(unlabeled_for(Recipe(augment=True, perturbed=2.0), files, tmp_path / "c.txt", 0)).read().splitlines()
    assert lines[:2] == ["markets rose today", "rain is expected"] and len(lines) == 2 + 20
    assert all(_is_subsequence(x.split(), texts[i % 10].split()) and "\t" not in x for i, x in enumerate(lines[2:]))
    only = open(unlabeled_for(Recipe(augment=False, perturbed=0.5), files, tmp_path / "d.txt", 0)).read()
    assert len(only.splitlines()) == 5


def test_a_share_of_the_snippets_is_a_seeded_sample_not_the_first_ones(tmp_path):
    # The train split's file keeps the corpus's order (positives first); a share taken from its head
    # would carry one label only.
    texts = [" ".join([f"pos{i}"] * 6) for i in range(50)] + [" ".join([f"neg{i}"] * 6) for i in range(50)]
    train = write_splits({"train": [(t, int(i < 50)) for i, t in enumerate(texts)]}, tmp_path)["train"]
    files = {"train": train, "unlabeled": tmp_path / "unused.txt"}
    draw = [open(unlabeled_for(Recipe(augment=False, perturbed=0.5), files, tmp_path / f"{n}.txt", seed)).read()
            for n, seed in (("a", 0), ("b", 0), ("c", 1))]
    copies = draw[0].splitlines()
    assert len(copies) == 50 and draw[0] == draw[1] and draw[0] != draw[2]  # seeded
    sources = [x.split()[0] for x in copies]  # every word of a copy names the snippet it came from
    assert 10 <= sum(s.startswith("neg") for s in sources) <= 40  # both halves of the file, not its first 50
    assert len(set(sources)) == len(sources)  # 50 distinct snippets, none copied twice


def test_the_baseline_gets_no_teacher_signal_whatever_the_recipe():
    b = baseline_of(Recipe(augment=True, perturbed=1.0, alpha_embed=2.0, alpha=0.9, layers=4))
    assert (b.alpha, b.augment, b.perturbed, b.alpha_embed, b.layers) == (0.0, False, 0.0, 0.0, 4)
