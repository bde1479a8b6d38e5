"""From-scratch BERT (teacher) and DistilBERT (student), weight-compatible with
Hugging Face checkpoints. Pure PyTorch: nothing here imports web or training code.

    import model
    m = model.load("path/to/checkpoint")      # our nn.Module, eval mode
    h = m(input_ids, attention_mask)           # a tensor, never a tuple
    model.save(m, "out/", tokenizer=tok)       # transformers.AutoModel* loads it
"""

from .bert import BertForMaskedLM, BertForSequenceClassification, BertModel
from .checkpoint import CLASSES, CheckpointError, load, name_table, read_pooling, save
from .config import BertConfig, DistilBertConfig, EncoderConfig, config_from_hf_dict
from .device import resolve_device, resolve_dtype
from .distilbert import DistilBertForMaskedLM, DistilBertForSequenceClassification, DistilBertModel
from .encoder import Encoder, EncoderForMaskedLM
from .pooling import cls_pool, mean_pool, pool
from .tokenizer import Batch, Tokenizer

__all__ = [
    "CLASSES",
    "Batch",
    "BertConfig",
    "BertForMaskedLM",
    "BertForSequenceClassification",
    "BertModel",
    "CheckpointError",
    "DistilBertConfig",
    "DistilBertForMaskedLM",
    "DistilBertForSequenceClassification",
    "DistilBertModel",
    "Encoder",
    "EncoderConfig",
    "EncoderForMaskedLM",
    "Tokenizer",
    "cls_pool",
    "config_from_hf_dict",
    "load",
    "mean_pool",
    "name_table",
    "pool",
    "read_pooling",
    "resolve_device",
    "resolve_dtype",
    "save",
]
