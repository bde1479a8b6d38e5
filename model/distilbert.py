"""DistilBERT (Sanh et al. 2019, arXiv 1910.01108): the student. BERT's blocks with
half the layers, no token-type embeddings and no pooler; classification through a
ReLU pre-classifier on the [CLS] vector.
"""

from __future__ import annotations

import torch
from torch import nn

from .config import DistilBertConfig
from .encoder import Encoder, EncoderForMaskedLM
from .layers import init_weights


def _check(config: object) -> DistilBertConfig:
    if not isinstance(config, DistilBertConfig):
        raise TypeError(f"DistilBERT models need a DistilBertConfig, got {type(config).__name__}")
    return config


class DistilBertModel(Encoder):
    family = "distilbert"
    task = "base"
    architecture = "DistilBertModel"

    def __init__(self, config: DistilBertConfig) -> None:
        super().__init__(_check(config), add_pooler=False)

    @property
    def encoder(self) -> DistilBertModel:
        return self


class DistilBertForMaskedLM(EncoderForMaskedLM):
    family = "distilbert"
    task = "mlm"
    architecture = "DistilBertForMaskedLM"

    def __init__(self, config: DistilBertConfig) -> None:
        super().__init__(DistilBertModel(config))


class DistilBertForSequenceClassification(nn.Module):
    """h_[CLS] -> linear -> ReLU -> dropout -> linear."""

    family = "distilbert"
    task = "classification"
    architecture = "DistilBertForSequenceClassification"

    def __init__(self, config: DistilBertConfig) -> None:
        super().__init__()
        self.config = _check(config)
        self.encoder = DistilBertModel(config)
        self.pre_classifier = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout = nn.Dropout(config.classifier_dropout or 0.0)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        init_weights(self.pre_classifier, config.initializer_range)
        init_weights(self.classifier, config.initializer_range)

    def logits(self, last_hidden: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.pre_classifier(last_hidden[:, 0]))
        return self.classifier(self.dropout(h))  # (B, labels)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        return self.logits(self.encoder(input_ids, attention_mask))
