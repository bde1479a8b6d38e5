"""Dynamic masking statistics over many draws: 15% chosen, 80/10/10, specials untouched."""

from __future__ import annotations

import torch

from training.masking import MaskingConfig, mask_tokens, token_weights

SPECIAL = torch.tensor([0, 1, 2, 3, 4])  # PAD UNK CLS SEP MASK
MASK_ID, VOCAB = 4, 1000


def _batch(B=64, T=128, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, VOCAB, (B, T), generator=g)
    ids[:, 0], mask = 2, torch.ones(B, T, dtype=torch.long)
    lengths = torch.randint(10, T, (B,), generator=g)
    for i, n in enumerate(lengths):
        ids[i, n - 1] = 3
        ids[i, n:] = 0
        mask[i, n:] = 0
    return ids, mask


def test_masking_statistics():
    cfg = MaskingConfig()
    chosen = masked = randomized = kept = candidates = 0
    for seed in range(40):
        ids, mask = _batch(seed=seed)
        out, labels = mask_tokens(ids, mask, SPECIAL, MASK_ID, VOCAB, cfg, torch.Generator().manual_seed(seed))
        sel = labels != -100
        cand = mask.bool() & ~torch.isin(ids, SPECIAL)
        assert not (sel & ~cand).any()  # specials and padding never chosen
        assert torch.equal(labels[sel], ids[sel])  # labels are the original tokens
        assert torch.equal(out[~sel], ids[~sel])  # nothing else changes
        chosen += sel.sum().item()
        candidates += cand.sum().item()
        masked += (sel & (out == MASK_ID)).sum().item()
        kept += (sel & (out == ids)).sum().item()
        randomized += (sel & (out != MASK_ID) & (out != ids)).sum().item()
    assert abs(chosen / candidates - 0.15) < 0.01
    assert abs(masked / chosen - 0.8) < 0.02
    assert abs(kept / chosen - 0.1) < 0.02  # (a random token equal to the original counts as kept: ~0.01%)
    assert abs(randomized / chosen - 0.1) < 0.02


def test_smoothing_prefers_rare_tokens_and_keeps_rate():
    cfg = MaskingConfig(smoothing=0.7)
    ids, mask = _batch(B=64, T=128, seed=1)
    ids[:, 1:40] = torch.where(mask[:, 1:40].bool(), torch.tensor(7), ids[:, 1:40])  # token 7 very frequent
    counts = torch.bincount(ids[mask.bool()], minlength=VOCAB)
    w = token_weights(counts, 0.7)
    rate_frequent, rate_rare, total, cand_total = 0.0, 0.0, 0, 0
    for seed in range(30):
        _, labels = mask_tokens(ids, mask, SPECIAL, MASK_ID, VOCAB, cfg, torch.Generator().manual_seed(seed), w)
        sel = labels != -100
        cand = mask.bool() & ~torch.isin(ids, SPECIAL)
        rate_frequent += (sel & (ids == 7)).sum().item() / ((ids == 7) & cand).sum().item()
        rate_rare += (sel & (ids != 7) & cand).sum().item() / ((ids != 7) & cand).sum().item()
        total += sel.sum().item()
        cand_total += cand.sum().item()
    assert rate_rare > 3 * rate_frequent
    assert abs(total / cand_total - 0.15) < 0.02


def test_masking_is_deterministic_per_generator_seed():
    ids, mask = _batch()
    a = mask_tokens(ids, mask, SPECIAL, MASK_ID, VOCAB, MaskingConfig(), torch.Generator().manual_seed(5))
    b = mask_tokens(ids, mask, SPECIAL, MASK_ID, VOCAB, MaskingConfig(), torch.Generator().manual_seed(5))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
