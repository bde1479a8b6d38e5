"""BERT (Devlin et al. 2018): the teacher. Token-type embeddings, tanh pooler,
classification on the pooled [CLS] vector.
"""

from __future__ import annotations

import torch
from torch import nn

from .config import BertConfig
from .encoder import Encoder, EncoderForMaskedLM
from .layers import init_weights


def _check(config: object) -> BertConfig:
    if not isinstance(config, BertConfig):
        raise TypeError(f"BERT models need a BertConfig, got {type(config).__name__}")
    return config


class BertModel(Encoder):
    family = "bert"
    task = "base"
    architecture = "BertModel"

    def __init__(self, config: BertConfig, add_pooler: bool = True) -> None:
        super().__init__(_check(config), add_pooler=add_pooler)

    @property
    def encoder(self) -> BertModel:
        return self


class BertForMaskedLM(EncoderForMaskedLM):
    family = "bert"
    task = "mlm"
    architecture = "BertForMaskedLM"

    def __init__(self, config: BertConfig) -> None:
        super().__init__(BertModel(config, add_pooler=False))


class BertForSequenceClassification(nn.Module):
    """pooled [CLS] -> dropout -> linear, as in the BERT paper's GLUE set-up."""

    family = "bert"
    task = "classification"
    architecture = "BertForSequenceClassification"

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.config = _check(config)
        self.encoder = BertModel(config, add_pooler=True)
        p = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout
        self.dropout = nn.Dropout(p)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        init_weights(self.classifier, config.initializer_range)

    def logits(self, last_hidden: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(self.encoder.pool(last_hidden)))  # (B, labels)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return self.logits(self.encoder(input_ids, attention_mask, token_type_ids))
