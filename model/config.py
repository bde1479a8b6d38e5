"""Typed configs for the BERT teacher and the DistilBERT student.

Defaults are the papers' base models: BERT-base (Devlin et al. 2018) and
DistilBERT (Sanh et al. 2019, arXiv 1910.01108). Both read and write the
Hugging Face ``config.json`` so checkpoints move in both directions.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

ACTIVATIONS = ("gelu", "gelu_new", "gelu_pytorch_tanh", "relu")


@dataclass
class EncoderConfig:
    """Fields shared by both families, in our own names."""

    vocab_size: int = 30522
    max_position_embeddings: int = 512
    hidden_size: int = 768
    num_layers: int = 12
    num_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"  # exact erf GELU, as in both papers
    layer_norm_eps: float = 1e-12
    hidden_dropout: float = 0.1
    attention_dropout: float = 0.1
    type_vocab_size: int = 2  # 0 means no token-type embeddings (DistilBERT)
    pad_token_id: int = 0
    initializer_range: float = 0.02
    classifier_dropout: float | None = None  # None: use hidden_dropout
    sinusoidal_pos_embds: bool = False
    id2label: dict[int, str] = field(default_factory=lambda: {0: "LABEL_0", 1: "LABEL_1"})

    family: ClassVar[str] = ""

    def __post_init__(self) -> None:
        self.id2label = {int(k): str(v) for k, v in self.id2label.items()}
        if self.hidden_size % self.num_heads != 0:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be a multiple of "
                f"num_heads ({self.num_heads})"
            )
        if self.hidden_act not in ACTIVATIONS:
            raise ValueError(f"hidden_act {self.hidden_act!r} not one of {ACTIVATIONS}")
        if min(self.vocab_size, self.max_position_embeddings, self.num_layers) < 1:
            raise ValueError(
                "vocab_size, max_position_embeddings and num_layers must be >= 1, got "
                f"{self.vocab_size}, {self.max_position_embeddings}, {self.num_layers}"
            )
        if sorted(self.id2label) != list(range(len(self.id2label))):
            raise ValueError(f"id2label keys must be 0..n-1, got {sorted(self.id2label)}")

    @property
    def head_size(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def num_labels(self) -> int:
        return len(self.id2label)

    def replace(self, **changes: Any) -> EncoderConfig:
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values.update(changes)
        return type(self)(**values)

    # -- Hugging Face config.json -------------------------------------------------
    @classmethod
    def from_hf_dict(cls, d: dict[str, Any]) -> EncoderConfig:
        raise NotImplementedError

    def to_hf_dict(self, architecture: str) -> dict[str, Any]:
        raise NotImplementedError

    def _labels_to_hf(self) -> dict[str, Any]:
        return {
            "id2label": {str(i): name for i, name in self.id2label.items()},
            "label2id": {name: i for i, name in self.id2label.items()},
        }


def _id2label(d: dict[str, Any]) -> dict[int, str]:
    if "id2label" in d:
        return {int(k): v for k, v in d["id2label"].items()}
    n = int(d.get("num_labels", 2))
    return {i: f"LABEL_{i}" for i in range(n)}


@dataclass
class BertConfig(EncoderConfig):
    """BERT-base: 12 layers, token types, pooler."""

    family: ClassVar[str] = "bert"

    @classmethod
    def from_hf_dict(cls, d: dict[str, Any]) -> BertConfig:
        if d.get("model_type", "bert") != "bert":
            raise ValueError(f"expected model_type 'bert', got {d.get('model_type')!r}")
        if d.get("position_embedding_type", "absolute") != "absolute":
            raise ValueError(
                f"position_embedding_type {d['position_embedding_type']!r} is not supported "
                "(only 'absolute')"
            )
        return cls(
            vocab_size=d.get("vocab_size", 30522),
            max_position_embeddings=d.get("max_position_embeddings", 512),
            hidden_size=d.get("hidden_size", 768),
            num_layers=d.get("num_hidden_layers", 12),
            num_heads=d.get("num_attention_heads", 12),
            intermediate_size=d.get("intermediate_size", 3072),
            hidden_act=d.get("hidden_act", "gelu"),
            layer_norm_eps=d.get("layer_norm_eps", 1e-12),
            hidden_dropout=d.get("hidden_dropout_prob", 0.1),
            attention_dropout=d.get("attention_probs_dropout_prob", 0.1),
            type_vocab_size=d.get("type_vocab_size", 2),
            pad_token_id=d.get("pad_token_id", 0) or 0,
            initializer_range=d.get("initializer_range", 0.02),
            classifier_dropout=d.get("classifier_dropout"),
            id2label=_id2label(d),
        )

    def to_hf_dict(self, architecture: str) -> dict[str, Any]:
        return {
            "architectures": [architecture],
            "model_type": "bert",
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_heads,
            "intermediate_size": self.intermediate_size,
            "hidden_act": self.hidden_act,
            "hidden_dropout_prob": self.hidden_dropout,
            "attention_probs_dropout_prob": self.attention_dropout,
            "max_position_embeddings": self.max_position_embeddings,
            "type_vocab_size": self.type_vocab_size,
            "initializer_range": self.initializer_range,
            "layer_norm_eps": self.layer_norm_eps,
            "pad_token_id": self.pad_token_id,
            "position_embedding_type": "absolute",
            "classifier_dropout": self.classifier_dropout,
            **self._labels_to_hf(),
        }


@dataclass
class DistilBertConfig(EncoderConfig):
    """DistilBERT: BERT-base halved in depth, no token types, no pooler."""

    num_layers: int = 6  # one layer out of two of the teacher
    type_vocab_size: int = 0  # token-type embeddings removed (paper, section 3)
    classifier_dropout: float | None = 0.2  # HF's seq_classif_dropout

    family: ClassVar[str] = "distilbert"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.type_vocab_size != 0:
            raise ValueError(f"DistilBERT has no token types, got type_vocab_size={self.type_vocab_size}")

    @classmethod
    def from_hf_dict(cls, d: dict[str, Any]) -> DistilBertConfig:
        if d.get("model_type", "distilbert") != "distilbert":
            raise ValueError(f"expected model_type 'distilbert', got {d.get('model_type')!r}")
        return cls(
            vocab_size=d.get("vocab_size", 30522),
            max_position_embeddings=d.get("max_position_embeddings", 512),
            hidden_size=d.get("dim", 768),
            num_layers=d.get("n_layers", 6),
            num_heads=d.get("n_heads", 12),
            intermediate_size=d.get("hidden_dim", 3072),
            hidden_act=d.get("activation", "gelu"),
            layer_norm_eps=1e-12,  # hard-coded in DistilBERT
            hidden_dropout=d.get("dropout", 0.1),
            attention_dropout=d.get("attention_dropout", 0.1),
            pad_token_id=d.get("pad_token_id", 0) or 0,
            initializer_range=d.get("initializer_range", 0.02),
            classifier_dropout=d.get("seq_classif_dropout", 0.2),
            sinusoidal_pos_embds=d.get("sinusoidal_pos_embds", False),
            id2label=_id2label(d),
        )

    def to_hf_dict(self, architecture: str) -> dict[str, Any]:
        return {
            "architectures": [architecture],
            "model_type": "distilbert",
            "vocab_size": self.vocab_size,
            "max_position_embeddings": self.max_position_embeddings,
            "sinusoidal_pos_embds": self.sinusoidal_pos_embds,
            "n_layers": self.num_layers,
            "n_heads": self.num_heads,
            "dim": self.hidden_size,
            "hidden_dim": self.intermediate_size,
            "dropout": self.hidden_dropout,
            "attention_dropout": self.attention_dropout,
            "activation": self.hidden_act,
            "initializer_range": self.initializer_range,
            "qa_dropout": 0.1,
            "seq_classif_dropout": self.classifier_dropout if self.classifier_dropout is not None else 0.2,
            "pad_token_id": self.pad_token_id,
            "tie_weights_": True,
            **self._labels_to_hf(),
        }


CONFIGS: dict[str, type[EncoderConfig]] = {"bert": BertConfig, "distilbert": DistilBertConfig}


def config_from_hf_dict(d: dict[str, Any]) -> EncoderConfig:
    model_type = d.get("model_type")
    if model_type not in CONFIGS:
        raise ValueError(
            f"unsupported model_type {model_type!r}: this package reads {sorted(CONFIGS)}"
        )
    return CONFIGS[model_type].from_hf_dict(d)
