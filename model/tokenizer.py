"""WordPiece tokenizer over Hugging Face `tokenizers` (the fast Rust implementation).

Built from a checkpoint's tokenizer.json, or from its vocab.txt with BERT's
normalisation. We never use ``BertTokenizerFast(vocab_file=...)``, which can
silently build a tiny vocabulary.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import Encoding, decoders, models, normalizers, pre_tokenizers, processors
from tokenizers import Tokenizer as HFTokenizer

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


@dataclass
class Batch:
    input_ids: torch.Tensor  # (B, T) int64
    attention_mask: torch.Tensor  # (B, T) int64, 1 for real tokens
    lengths: list[int]  # real tokens per row, specials included
    truncated: list[bool]  # whether a row lost tokens to max_length


def pad_rows(ids: list[list[int]], pad_id: int, max_length: int, keep_last: int | None = None) -> Batch:
    """Rows of ids cut to max_length and right-padded into (B, T) ids and attention mask, T the longest
    row. ``keep_last``: a cut row ends with this id (the tokenizer's [SEP]); None: a plain cut."""
    rows, truncated = [], []
    for r in ids:
        cut = len(r) > max_length
        if cut:
            r = r[: max_length - 1] + [keep_last] if keep_last is not None else r[:max_length]
        rows.append(r)
        truncated.append(cut)
    T = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), T), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), T), dtype=torch.long)
    for i, r in enumerate(rows):
        input_ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        mask[i, : len(r)] = 1
    return Batch(input_ids, mask, [len(r) for r in rows], truncated)


class Tokenizer:
    def __init__(self, backend: HFTokenizer, lowercase: bool = True) -> None:
        self.backend = backend
        # Padding and truncation are ours to decide per batch.
        self.backend.no_padding()
        self.backend.no_truncation()
        self.lowercase = lowercase
        vocab = backend.get_vocab()
        missing = [t for t in SPECIAL_TOKENS if t not in vocab]
        if missing:
            raise ValueError(f"vocabulary lacks special tokens {missing}")
        self.pad_id, self.cls_id, self.sep_id = vocab["[PAD]"], vocab["[CLS]"], vocab["[SEP]"]
        self.mask_id, self.unk_id = vocab["[MASK]"], vocab["[UNK]"]
        self.special_ids = frozenset(vocab[t] for t in SPECIAL_TOKENS)

    @property
    def vocab_size(self) -> int:
        return self.backend.get_vocab_size()

    # -- construction -------------------------------------------------------------
    @classmethod
    def from_vocab(cls, vocab: dict[str, int] | list[str], lowercase: bool = True) -> Tokenizer:
        if isinstance(vocab, list):
            vocab = {tok: i for i, tok in enumerate(vocab)}
        backend = HFTokenizer(models.WordPiece(vocab=vocab, unk_token="[UNK]", max_input_chars_per_word=100))
        backend.normalizer = normalizers.BertNormalizer(
            clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=lowercase
        )
        backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        backend.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]",
            pair="[CLS] $A [SEP] $B:1 [SEP]:1",
            special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
        )
        backend.decoder = decoders.WordPiece(prefix="##")
        return cls(backend, lowercase)

    @classmethod
    def from_dir(cls, path: str | Path) -> Tokenizer:
        path = Path(path)
        lowercase = True
        cfg = path / "tokenizer_config.json"
        if cfg.is_file():
            lowercase = bool(json.loads(cfg.read_text()).get("do_lower_case", True))
        if (path / "tokenizer.json").is_file():
            return cls(HFTokenizer.from_file(str(path / "tokenizer.json")), lowercase)
        if (path / "vocab.txt").is_file():
            tokens = (path / "vocab.txt").read_text(encoding="utf-8").split("\n")
            if tokens and tokens[-1] == "":
                tokens = tokens[:-1]
            return cls.from_vocab(tokens, lowercase)
        raise FileNotFoundError(f"{path}: no tokenizer.json or vocab.txt")

    # -- use ----------------------------------------------------------------------
    def tokenize_ids(self, texts: list[str]) -> list[list[int]]:
        """Ids with [CLS]/[SEP], untruncated."""
        return [e.ids for e in self.backend.encode_batch(texts)]

    def pieces(self, texts: list[str]) -> list[Encoding]:
        """Each text's encoding without [CLS]/[SEP] (``.ids``, ``.tokens``, ``.offsets``): the segments
        a sentence pair is assembled from (``pair_ids``)."""
        return self.backend.encode_batch(texts, add_special_tokens=False)

    def pair_ids(self, a: list[int], b: list[int]) -> tuple[list[int], int]:
        """BERT's pair format, [CLS] a [SEP] b [SEP] (DistilBERT's too, as `transformers` writes it), and
        the index where segment B starts: token_type_ids are 0 before it and 1 from it on."""
        return [self.cls_id, *a, self.sep_id, *b, self.sep_id], len(a) + 2

    def count_tokens(self, texts: list[str]) -> list[int]:
        return [len(ids) for ids in self.tokenize_ids(texts)]

    def pad(self, ids: list[list[int]], max_length: int) -> Batch:
        """Truncate each row to max_length (keeping the final [SEP]) and right-pad."""
        return pad_rows(ids, self.pad_id, max_length, keep_last=self.sep_id)

    def __call__(self, texts: list[str], max_length: int = 512) -> Batch:
        return self.pad(self.tokenize_ids(texts), max_length)

    def save(self, path: str | Path) -> None:
        """tokenizer.json + vocab.txt + tokenizer_config.json, loadable by AutoTokenizer."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.backend.save(str(path / "tokenizer.json"))
        vocab = sorted(self.backend.get_vocab().items(), key=lambda kv: kv[1])
        (path / "vocab.txt").write_text("".join(f"{t}\n" for t, _ in vocab), encoding="utf-8")
        (path / "tokenizer_config.json").write_text(json.dumps({
            "tokenizer_class": "BertTokenizer",
            "do_lower_case": self.lowercase,
            "unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]",
            "cls_token": "[CLS]", "mask_token": "[MASK]",
            "model_max_length": 512,
        }, indent=2) + "\n")
        (path / "special_tokens_map.json").write_text(json.dumps({
            "unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]",
            "cls_token": "[CLS]", "mask_token": "[MASK]",
        }, indent=2) + "\n")
