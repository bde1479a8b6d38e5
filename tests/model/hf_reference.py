"""Builders of transformers reference models, shared by the model tests."""

from __future__ import annotations

import torch

SMALL_BERT = {
    "vocab_size": 120, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
    "intermediate_size": 64, "max_position_embeddings": 64, "type_vocab_size": 2,
}
SMALL_DISTIL = {
    "vocab_size": 120, "dim": 32, "n_layers": 2, "n_heads": 4, "hidden_dim": 64,
    "max_position_embeddings": 64,
}


def hf_class(name: str):
    import transformers

    return getattr(transformers, name)


def hf_config(name: str, size: str):
    import transformers

    labels = {"id2label": {0: "negative", 1: "neutral", 2: "positive"}}
    if name.startswith("Distil"):
        kw = SMALL_DISTIL if size == "small" else {}
        return transformers.DistilBertConfig(**kw, **labels)
    kw = SMALL_BERT if size == "small" else {}
    return transformers.BertConfig(**kw, **labels)


def perturb(module: torch.nn.Module, seed: int = 0) -> None:
    """Make biases and LayerNorms non-trivial so a mis-mapped tensor cannot hide."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.02 * torch.randn(p.shape, generator=g))


def padded_batch(vocab_size: int, lengths=(12, 7, 3), seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    T = max(lengths)
    ids = torch.randint(5, vocab_size, (len(lengths), T), generator=g)
    mask = torch.zeros(len(lengths), T, dtype=torch.long)
    for i, n in enumerate(lengths):
        mask[i, :n] = 1
    ids = ids.masked_fill(mask == 0, 0)
    return ids, mask


def hf_output(hf_model, ids, mask) -> torch.Tensor:
    out = hf_model(input_ids=ids, attention_mask=mask)
    return out.logits if hasattr(out, "logits") else out.last_hidden_state
