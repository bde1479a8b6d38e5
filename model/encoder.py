"""The Transformer encoder both families share: embeddings, a stack of post-LN blocks,
and (BERT only) the tanh pooler over the first token.
"""

from __future__ import annotations

import torch
from torch import nn

from .config import EncoderConfig
from .layers import Embeddings, MaskedLMHead, TransformerBlock, attention_bias, init_weights


class Encoder(nn.Module):
    """Base model: ``forward`` returns the last hidden state (B, T, C)."""

    def __init__(self, config: EncoderConfig, add_pooler: bool = False) -> None:
        super().__init__()
        self.config = config
        self.embeddings = Embeddings(config)
        self.layers = nn.ModuleList(TransformerBlock(config) for _ in range(config.num_layers))
        self.pooler = nn.Linear(config.hidden_size, config.hidden_size) if add_pooler else None
        init_weights(self, config.initializer_range)

    def hidden_states(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> list[torch.Tensor]:
        """Embedding output then every layer's output: num_layers + 1 tensors of (B, T, C).

        Distillation aligns student and teacher on these (the cosine loss).
        """
        x = self.embeddings(input_ids, token_type_ids)
        bias = attention_bias(attention_mask, x.dtype)
        states = [x]
        for layer in self.layers:
            x = layer(x, bias)
            states.append(x)
        return states

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        x = self.embeddings(input_ids, token_type_ids)
        bias = attention_bias(attention_mask, x.dtype)
        for layer in self.layers:
            x = layer(x, bias)
        return x

    def pool(self, last_hidden: torch.Tensor) -> torch.Tensor:
        """BERT's pooler: tanh(W h_[CLS] + b), (B, T, C) -> (B, C)."""
        if self.pooler is None:
            raise ValueError("this encoder was built without a pooler")
        return torch.tanh(self.pooler(last_hidden[:, 0]))


class EncoderForMaskedLM(nn.Module):
    """Encoder + MLM head whose decoder is the word-embedding matrix (tied)."""

    def __init__(self, encoder: Encoder) -> None:
        super().__init__()
        self.config = encoder.config
        self.encoder = encoder
        self.head = MaskedLMHead(encoder.config)
        init_weights(self.head, encoder.config.initializer_range)

    def logits(self, last_hidden: torch.Tensor) -> torch.Tensor:
        return self.head(last_hidden, self.encoder.embeddings.word.weight)  # (B, T, vocab)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return self.logits(self.encoder(input_ids, attention_mask, token_type_ids))
