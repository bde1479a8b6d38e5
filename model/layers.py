"""Building blocks shared by BERT and DistilBERT: one implementation, two models.

Shape legend: B batch, T tokens, C hidden size, H heads, D head size (C = H * D).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .config import EncoderConfig


def activation(name: str) -> nn.Module:
    if name == "gelu":
        return nn.GELU()
    if name in ("gelu_new", "gelu_pytorch_tanh"):
        return nn.GELU(approximate="tanh")
    if name == "relu":
        return nn.ReLU()
    raise ValueError(f"unknown activation {name!r}")


def sinusoidal_positions(n_pos: int, dim: int) -> torch.Tensor:
    """The fixed sinusoid table of Vaswani et al., as DistilBERT's option uses it."""
    pos = torch.arange(n_pos, dtype=torch.float64)[:, None]
    j = torch.arange(dim, dtype=torch.float64)[None, :]
    angle = pos / torch.pow(10000.0, 2 * torch.div(j, 2, rounding_mode="floor") / dim)
    table = torch.zeros(n_pos, dim, dtype=torch.float64)
    table[:, 0::2] = torch.sin(angle[:, 0::2])
    table[:, 1::2] = torch.cos(angle[:, 1::2])
    return table.float()


class Embeddings(nn.Module):
    """Word + learned position (+ token-type for BERT), then LayerNorm and dropout."""

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.word = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.position = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.token_type = (
            nn.Embedding(config.type_vocab_size, config.hidden_size)
            if config.type_vocab_size > 0
            else None
        )
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout)
        if config.sinusoidal_pos_embds:
            with torch.no_grad():
                self.position.weight.copy_(
                    sinusoidal_positions(config.max_position_embeddings, config.hidden_size)
                )
            self.position.weight.requires_grad_(False)

    def forward(
        self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        T = input_ids.shape[1]
        if T > self.position.num_embeddings:
            raise ValueError(
                f"sequence of {T} tokens exceeds max_position_embeddings "
                f"({self.position.num_embeddings}); truncate the input"
            )
        positions = torch.arange(T, device=input_ids.device)
        x = self.word(input_ids) + self.position(positions)[None]  # (B, T, C)
        if self.token_type is not None:
            if token_type_ids is None:
                x = x + self.token_type.weight[0]  # all tokens of segment A
            else:
                x = x + self.token_type(token_type_ids)
        return self.dropout(self.norm(x))


class SelfAttention(nn.Module):
    """Multi-head self-attention through torch's fused scaled_dot_product_attention."""

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        C = config.hidden_size
        self.num_heads = config.num_heads
        self.query = nn.Linear(C, C)
        self.key = nn.Linear(C, C)
        self.value = nn.Linear(C, C)
        self.out = nn.Linear(C, C)
        self.dropout_p = config.attention_dropout
        # True: softmax(Q K^T / sqrt(D) + bias) V spelled out, the form ONNX Runtime's attention
        # fusion recognises; model/export.py sets it while tracing. Same numbers, no fused kernel.
        self.explicit = False

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None) -> torch.Tensor:
        B, T, C = x.shape
        H = self.num_heads

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.view(B, T, H, C // H).transpose(1, 2)  # (B, T, C) -> (B, H, T, D)

        q, k, v = heads(self.query(x)), heads(self.key(x)), heads(self.value(x))
        if self.explicit:
            scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(C // H)  # (B, H, T, T)
            if attn_mask is not None:
                scores = scores + attn_mask
            y = torch.matmul(torch.softmax(scores, dim=-1), v)  # (B, H, T, D)
        else:
            y = F.scaled_dot_product_attention(
                q, k, v, attn_mask=attn_mask, dropout_p=self.dropout_p if self.training else 0.0
            )  # (B, H, T, D)
        y = y.transpose(1, 2).reshape(B, T, C)  # (B, H, T, D) -> (B, T, C)
        return self.out(y)


class FeedForward(nn.Module):
    """Position-wise two-layer MLP: C -> intermediate -> C."""

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.up = nn.Linear(config.hidden_size, config.intermediate_size)
        self.act = activation(config.hidden_act)
        self.down = nn.Linear(config.intermediate_size, config.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(self.act(self.up(x)))


class TransformerBlock(nn.Module):
    """Post-LN block of the original Transformer, as in BERT: x = LN(x + sublayer(x))."""

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.attention = SelfAttention(config)
        self.attention_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.ffn = FeedForward(config)
        self.ffn_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None) -> torch.Tensor:
        x = self.attention_norm(x + self.dropout(self.attention(x, attn_mask)))
        return self.ffn_norm(x + self.dropout(self.ffn(x)))


def attention_bias(attention_mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """(B, T) 1/0 padding mask -> additive (B, 1, 1, T) bias for every query."""
    if attention_mask is None:
        return None
    # (1 - mask) * min rather than masked_fill: the same values, in the form ONNX Runtime's
    # attention fusion matches (model/export.py).
    keep = attention_mask[:, None, None, :].to(dtype)  # (B, T) -> (B, 1, 1, T)
    return (1.0 - keep) * torch.finfo(dtype).min


class MaskedLMHead(nn.Module):
    """dense -> act -> LayerNorm -> decoder tied to the word embeddings (+ bias)."""

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.transform = nn.Linear(config.hidden_size, config.hidden_size)
        self.act = activation(config.hidden_act)
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))

    def forward(self, hidden: torch.Tensor, word_weight: torch.Tensor) -> torch.Tensor:
        # The decoder weight is passed in, not owned, so the tie survives .to() and loading.
        h = self.norm(self.act(self.transform(hidden)))
        return F.linear(h, word_weight, self.bias)  # (B, T, vocab)


def init_weights(module: nn.Module, std: float) -> None:
    """BERT's initialisation: N(0, std) for weights, zero biases, unit LayerNorm."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=std)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            if m.weight.requires_grad:  # leave sinusoidal tables alone
                nn.init.normal_(m.weight, std=std)
                if m.padding_idx is not None:
                    with torch.no_grad():
                        m.weight[m.padding_idx].zero_()
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


__all__ = [
    "Embeddings",
    "FeedForward",
    "MaskedLMHead",
    "SelfAttention",
    "TransformerBlock",
    "attention_bias",
    "init_weights",
    "sinusoidal_positions",
]

