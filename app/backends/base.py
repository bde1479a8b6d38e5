"""The narrow interface every model backend implements, and the post-processing they share.

A backend is one loaded checkpoint: ``tokenize`` (texts -> ids), ``forward`` (a padded batch
-> per row plain floats, post-processed as each row's ``OutputSpec`` asks), ``warmup``, and
the descriptive fields ``/info`` shows. The core calls nothing else, so a backend on another
runtime (ONNX Runtime) only has to produce the encoder's last hidden states and logits and
hand them to ``postprocess``: pooling, normalisation and softmax stay identical.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from tokenizers import Encoding

from model.pooling import pool
from model.tokenizer import Tokenizer

from ..settings import ModelSpec

# Characters tokenized at first per id a text may keep (English WordPiece averages 4-5), with a
# floor; and the most characters one id can stand for (a word of up to 100, and a separator).
CHARS_PER_TOKEN, CUT_MIN_CHARS, MAX_CHARS_PER_TOKEN = 6, 2048, 101


def _prefix(text: str, n: int) -> str:
    """The first ``n`` characters, cut back to the last space in their second half."""
    if len(text) <= n:
        return text
    space = text.rfind(" ", n // 2, n)
    return text[: space if space > 0 else n]


PAIR_SPECIALS = 3  # [CLS] a [SEP] b [SEP]
Text = str | tuple[str, str]  # one input: a text, or a sentence pair (text, text_pair)


@dataclass(slots=True)
class Pair:
    """A sentence pair's two segments, as ids without [CLS]/[SEP]."""

    a: list[int]
    b: list[int]


def bounded(encode: Callable[[list[str]], list[Any]], texts: list[str], max_length: int) -> tuple[list, list[bool]]:
    """``encode`` (rows whose len() is their ids) on each text, never on more of it than ``max_length``
    ids need (see ``Backend.tokenize_bounded``). Returns the rows and, per text, whether it was whole."""
    cut = max(CUT_MIN_CHARS, CHARS_PER_TOKEN * max_length)
    rows = encode([_prefix(t, cut) for t in texts])
    exact = [len(t) <= cut for t in texts]
    cap = MAX_CHARS_PER_TOKEN * (max_length + 1)
    while cut < cap:
        todo = [i for i, t in enumerate(texts) if not exact[i] and len(rows[i]) <= max_length]
        if not todo:
            break
        cut = min(cut * 4, cap)
        for i, row in zip(todo, encode([_prefix(texts[i], cut) for i in todo]), strict=True):
            rows[i], exact[i] = row, len(texts[i]) <= cut
    return rows, exact


def longest_first(n_a: int, n_b: int, budget: int) -> tuple[int, int]:
    """How many ids of each segment a pair keeps within ``budget`` (max_length less its 3 special tokens),
    as Hugging Face tokenizers' ``longest_first`` keeps them: the shorter stays whole if it fits in half the
    budget and the longer takes the rest; else each keeps half (the longer the odd id, the second on a tie)."""
    if n_a + n_b <= budget:
        return n_a, n_b
    n1, n2 = sorted((n_a, n_b))
    n2 = n1 if n1 > budget else max(n1, budget - n1)
    if n1 + n2 > budget:
        n1 = budget // 2
        n2 = n1 + budget % 2
    keep_a, keep_b = (n2, n1) if n_a > n_b else (n1, n2)
    return min(n_a, keep_a), min(n_b, keep_b)


def token_type_ids(shape: tuple[int, int], lengths: list[int], segments: list[int]) -> torch.Tensor:
    """(B, T) token types: 1 from each pair's second segment to its last real token, else 0."""
    types = torch.zeros(shape, dtype=torch.long)
    for i, start in enumerate(segments):
        if start:
            types[i, start:lengths[i]] = 1
    return types


def check_vocabulary(name: str, tokenizer_size: int, embedding_rows: int) -> None:
    """A tokenizer id past the embedding table fails every batch holding it (on CUDA it can
    poison the context): refuse such a checkpoint at load."""
    if tokenizer_size > embedding_rows:
        raise ValueError(f"model {name!r}: the tokenizer has {tokenizer_size} tokens but the embedding table "
                         f"(vocab_size) only {embedding_rows} rows; tokenizer and weights do not belong together")


@dataclass(frozen=True)
class OutputSpec:
    """What a request wants back for each of its inputs."""

    kind: Literal["classify", "embed"]
    raw_scores: bool = False  # classify: logits instead of probabilities
    pooling: str = "mean"  # embed
    normalize: bool = True  # embed


class Backend(ABC):
    """One loaded model. Subclasses set the fields below in ``__init__``."""

    spec: ModelSpec
    name: str
    role: str
    path: Path
    family: str  # bert | distilbert
    task: str  # base | classification | ...
    labels: list[str]  # class names in score order; empty without a classifier
    max_length: int  # inputs are cut to this many tokens
    hidden_size: int
    default_pooling: str  # mean | cls
    tokenizer: Tokenizer
    token_types: bool = True  # forward feeds BERT token_type_ids (an ONNX export has no such input)

    @property
    def can_classify(self) -> bool:
        return self.task == "classification"

    @property
    def serves(self) -> tuple[str, ...]:
        """The tasks this entry answers: its configured ``task``, else what the model can do."""
        if self.spec.task:
            return (self.spec.task,)
        return ("classify", "embed") if self.can_classify else ("embed",)

    @property
    def default_output(self) -> OutputSpec:
        """Class scores for a classifier, else a sentence embedding."""
        return OutputSpec("classify" if self.can_classify else "embed")

    @abstractmethod
    def tokenize(self, texts: list[str]) -> list[list[int]]:
        """Ids with [CLS]/[SEP], untruncated (see ``tokenize_bounded``)."""

    def tokenize_bounded(self, texts: list[str]) -> tuple[list[list[int]], list[bool]]:
        """Ids of each text, never tokenizing more of it than ``max_length`` needs.

        A long text is cut to a prefix first (at a space, so no word is split) that still gives
        more than ``max_length`` ids, so over-length stays visible; a prefix that gives fewer is
        grown 4x at a time. Cost is bounded by the ids kept, not the text: a 2 MB string took 4.4 s
        whole and takes milliseconds here. Returns the ids and, per text, whether they are
        exact (the whole text was tokenized). The search stops at ``MAX_CHARS_PER_TOKEN`` chars
        per id, the most WordPiece can spend on one (a word over 100 chars is a single [UNK])."""
        return bounded(self.tokenize, texts, self.max_length)

    def pieces_bounded(self, texts: list[str]) -> tuple[list[Encoding], list[bool]]:
        """As ``tokenize_bounded``, each text's encoding without [CLS]/[SEP] (ids, tokens, offsets)."""
        return bounded(self.tokenizer.pieces, texts, self.max_length)

    def tokenize_inputs(self, inputs: list[Text]) -> tuple[list[list[int] | Pair], list[bool]]:
        """``tokenize_bounded`` for inputs that may hold sentence pairs: a text's ids (with [CLS]/[SEP]),
        or a pair's two segments (without them; the length rules decide what each keeps)."""
        singles = [i for i, t in enumerate(inputs) if isinstance(t, str)]
        if len(singles) == len(inputs):
            return self.tokenize_bounded(inputs)  # type: ignore[arg-type]
        out: list[list[int] | Pair] = [[] for _ in inputs]
        exact = [True] * len(inputs)
        if singles:
            ids, ok = self.tokenize_bounded([inputs[i] for i in singles])  # type: ignore[misc]
            for i, row, e in zip(singles, ids, ok, strict=True):
                out[i], exact[i] = row, e
        pairs = [i for i, t in enumerate(inputs) if not isinstance(t, str)]
        flat = [s for i in pairs for s in inputs[i]]
        encs, ok = self.pieces_bounded(flat)
        for k, i in enumerate(pairs):
            out[i] = Pair(encs[2 * k].ids, encs[2 * k + 1].ids)
            exact[i] = ok[2 * k] and ok[2 * k + 1]
        return out, exact

    @property
    def pairs_supported(self) -> bool:
        """Sentence pairs need token_type_ids for BERT; DistilBERT has no token types."""
        return self.family != "bert" or self.token_types

    @abstractmethod
    def forward(self, ids: list[list[int]], specs: list[OutputSpec],
                segments: list[int] | None = None) -> list[list[float]]:
        """One forward for a batch; per row the class scores (label order) or the embedding,
        as plain floats, so no tensor op is left for another thread (app/core/compute.py).
        ``segments``: per row where a sentence pair's second segment starts (0: a single text);
        None when no row is a pair."""

    @abstractmethod
    def warmup(self, max_batch: int) -> None:
        """Run the shapes the first requests will have, so they do not pay for it."""

    @abstractmethod
    def info(self) -> dict[str, Any]:
        """What /info and the distil_model metric report about this model."""

    def scores(self, values: list[float]) -> list[dict]:
        """Class scores in label order -> label/score pairs sorted by score."""
        pairs = [{"label": label, "score": v} for label, v in zip(self.labels, values, strict=True)]
        return sorted(pairs, key=lambda p: p["score"], reverse=True)

    def warmup_shapes(self, max_batch: int) -> list[tuple[int, int]]:
        return [(1, 8), (min(max_batch, 8), 32), (1, min(self.max_length, 128)),
                (max_batch, 16), (1, self.max_length)]


def postprocess(specs: list[OutputSpec], last: torch.Tensor, mask: torch.Tensor,
                logits: Callable[[list[int]], torch.Tensor] | None) -> list[list[float]]:
    """Rows of the encoder's output -> what each row's spec asks for, as plain floats.

    ``last`` is (B, T, C), ``mask`` (B, T); ``logits(rows)`` gives the classifier's (b, labels)
    for those rows (None: the model has no classifier).
    """
    out: list[list[float]] = [[] for _ in specs]
    rows = [i for i, s in enumerate(specs) if s.kind == "classify"]
    if rows and logits is not None:
        raw = logits(rows).float()  # (b, labels)
        probs = torch.softmax(raw, dim=-1)
        for r, i in enumerate(rows):
            out[i] = (raw if specs[i].raw_scores else probs)[r].tolist()
    groups: dict[tuple[str, bool], list[int]] = {}
    for i, s in enumerate(specs):
        if s.kind == "embed":
            groups.setdefault((s.pooling, s.normalize), []).append(i)
    for (method, normalize), members in groups.items():
        vecs = pool(last[members].float(), mask[members], method, normalize)  # type: ignore[arg-type]
        for r, i in enumerate(members):
            out[i] = vecs[r].tolist()
    return out
