"""Request and response bodies. Validation here turns into 422s with readable messages."""

from __future__ import annotations

import re
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator, model_validator

from ..backends.base import Text
from ..core.errors import InvalidInput, Unsupported
from ..settings import MAX_MODEL_NAME, MODEL_NAME_PATTERN

Inputs = str | list[str]
# A text, or a sentence pair [text, text_pair] (tokenized as [CLS] text [SEP] text_pair [SEP]).
PairInputs = str | list[str | tuple[str, str]]
# No configured model has another name: a longer or odder one is a short 422, never echoed whole.
ModelName = Annotated[str, Field(max_length=MAX_MODEL_NAME, pattern=MODEL_NAME_PATTERN)]
TOKEN_IDS_UNSUPPORTED = ("token-id input is not supported (ids of OpenAI's tokenizer do not map onto WordPiece); "
                         "send strings")


_STRING = re.compile(rb'"(?:[^"\\]++|\\.)*+"')  # a JSON string literal, escapes included
SCAN_FROM_BYTES = 65_536  # below this, parsing costs less than a millisecond: nothing to guard


def precheck_body(body: bytes, max_inputs: int) -> None:
    """Refuse, before parsing, a large body holding more JSON values than any request can: parsing a
    2 MB array of numbers builds a million objects and holds the event loop (and /health) for
    tens of milliseconds, a scan of the bytes costs a few. Values are counted by the commas and
    opening brackets outside string literals, so long texts (which are cut later) pass."""
    if len(body) < SCAN_FROM_BYTES:
        return
    bare = _STRING.sub(b'""', body)
    values = bare.count(b",") + bare.count(b"[") + bare.count(b"{")
    limit = 4 * max_inputs + 256  # the inputs, every field of any request, and room to spare
    if values > limit:
        raise InvalidInput(f"the body holds {values:,} JSON values outside strings; no request needs more than "
                           f"{limit:,}: inputs takes at most {max_inputs} strings (token ids are not supported)")


def _json_type(x: object) -> str:
    return {bool: "a boolean", int: "a number", float: "a number", list: "an array", dict: "an object",
            type(None): "null"}.get(type(x), type(x).__name__)


def _check_text(t: str, where: str) -> None:
    if not t.isascii():
        try:
            t.encode()
        except UnicodeEncodeError as e:
            raise ValueError(f"{where} is not valid Unicode: an unpaired surrogate at character {e.start}") from None


def precheck(data: Any, field: str, known: frozenset[str] | None = None, token_ids: bool = False,
             pairs: bool = False) -> Any:
    """Cheap checks on the parsed JSON before pydantic validates it element by element: a 2 MB
    list of integers would otherwise cost one error object per element, seconds on the event loop.
    Unknown fields (``known``), the element types of ``field`` and lone surrogates (which no
    tokenizer can encode) each end in one error. ``token_ids``: a list of numbers or of lists
    is token-id input, refused as unsupported. ``pairs``: an element may be a [text, text_pair] pair."""
    if not isinstance(data, dict):
        return data
    if known is not None and (unknown := [k for k in data if k not in known]):
        more = f" (and {len(unknown) - 5} more)" if len(unknown) > 5 else ""
        raise ValueError(f"unknown field{'s' if len(unknown) > 1 else ''} "
                         f"{', '.join(repr(k[:40]) for k in unknown[:5])}{more}; allowed: {sorted(known)}")
    value = data.get(field)
    single = isinstance(value, str)
    if not single and not isinstance(value, list):
        return data
    for i, t in enumerate([value] if single else value):
        where = field if single else f"{field}[{i}]"
        if pairs and not single and isinstance(t, list):
            if len(t) != 2 or not all(isinstance(x, str) for x in t):
                raise ValueError(f"{where} must be a string or a pair [text, text_pair] of two strings, not an "
                                 f"array of {len(t)} {'strings' if all(isinstance(x, str) for x in t) else 'values'}")
            _check_text(t[0], f"{where}[0]")
            _check_text(t[1], f"{where}[1]")
            continue
        if not isinstance(t, str):
            if token_ids and isinstance(t, int | list) and not isinstance(t, bool):
                raise Unsupported(TOKEN_IDS_UNSUPPORTED)
            pair = " or a pair [text, text_pair]" if pairs else ""
            raise ValueError(f"{where} must be a string{pair}, not {_json_type(t)}")
        _check_text(t, where)
    return data


def _check_inputs(v: PairInputs, field: str = "inputs") -> list:
    texts = [v] if isinstance(v, str) else v
    if not texts:
        raise ValueError(f"{field} must not be empty: send a string or a non-empty list of strings")
    for i, t in enumerate(texts):
        if isinstance(t, str):
            if not t.strip():
                raise ValueError(f"{field}[{i}] is empty or whitespace only")
        else:
            for j, part in enumerate(t):
                if not part.strip():
                    raise ValueError(f"{field}[{i}][{j}] is empty or whitespace only (a pair needs two texts)")
    return texts


class _WithInputs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    _pairs: ClassVar[bool] = False  # inputs may hold [text, text_pair] pairs

    inputs: Inputs = Field(description="A string or a list of strings")
    truncate: bool = Field(default=True, description="Cut inputs longer than the model's max length (a pair's "
                           "longer text first); if false such inputs are a 422")

    @model_validator(mode="before")
    @classmethod
    def _precheck(cls, data: Any) -> Any:
        return precheck(data, "inputs", frozenset(cls.model_fields), pairs=cls._pairs)

    @field_validator("inputs")
    @classmethod
    def _inputs(cls, v: PairInputs) -> PairInputs:
        _check_inputs(v)
        return v

    @property
    def texts(self) -> list[Text]:
        return [self.inputs] if isinstance(self.inputs, str) else list(self.inputs)


class _Request(_WithInputs):
    model: ModelName | None = Field(default=None, description="Model name; default: the configured default")


class ClassifyRequest(_Request):
    _pairs: ClassVar[bool] = True
    inputs: PairInputs = Field(description="A string, or a list of strings and [text, text_pair] pairs "
                               "(a cross-encoder's input: [CLS] text [SEP] text_pair [SEP])")
    raw_scores: bool = Field(default=False, description="Return logits instead of probabilities")


class LabelScore(BaseModel):
    label: str
    score: float


class ClassifyResponse(BaseModel):
    model: str
    predictions: list[list[LabelScore]] = Field(description="Per input, labels sorted by score")


class EmbedRequest(_Request):
    normalize: bool = True
    pooling: Literal["mean", "cls"] | None = Field(
        default=None, description="Default from the checkpoint (sentence-transformers' 1_Pooling), else mean")


class EmbedResponse(BaseModel):
    model: str
    dim: int
    embeddings: list[list[float]]


class TokenizeRequest(_Request):
    _pairs: ClassVar[bool] = True
    inputs: PairInputs = Field(description="A string, or a list of strings and [text, text_pair] pairs")


class TokenizedInput(BaseModel):
    ids: list[int] = Field(description="What the model would run: [CLS] text [SEP] (text_pair [SEP]), cut as "
                           "truncate says")
    tokens: list[str]
    offsets: list[tuple[int, int]] = Field(description="Per token, its characters [start, end) in its own text "
                                           "(text or text_pair, as type_ids says); [0, 0] for a special token")
    type_ids: list[int] | None = Field(default=None, description="A pair's segments: 0 text, 1 text_pair "
                                       "(BERT's token_type_ids; DistilBERT has none and ignores them)")
    truncated: bool = Field(description="Tokens were cut to fit the model's max length")


class TokenizeResponse(BaseModel):
    model: str
    max_length: int
    inputs: list[TokenizedInput]


class RerankRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: str = Field(description="Scored against each text as the pair (query, text)")
    texts: list[str] = Field(description="The texts to rank")
    top_n: Annotated[int, Field(ge=1)] | None = Field(default=None, description="Return only the best n")
    return_texts: bool = Field(default=False, validation_alias=AliasChoices("return_texts", "return_text"),
                               description="Echo each text beside its score (return_text, as TEI spells it, too)")
    raw_scores: bool = Field(default=False, description="The relevance logit instead of a probability")
    truncate: bool = Field(default=True, description="Cut a pair over the max length (the longer text first); "
                           "if false it is a 422")
    model: ModelName | None = Field(default=None, description="A cross-encoder classifier; default: the default model")

    @model_validator(mode="before")
    @classmethod
    def _precheck(cls, data: Any) -> Any:
        return precheck(data, "texts", frozenset((*cls.model_fields, "return_text")))

    @field_validator("query")
    @classmethod
    def _query(cls, v: str) -> str:
        _check_text(v, "query")
        if not v.strip():
            raise ValueError("query is empty or whitespace only")
        return v

    @field_validator("texts")
    @classmethod
    def _texts(cls, v: list[str]) -> list[str]:
        _check_inputs(v, "texts")
        return v


class RankedText(BaseModel):
    index: int = Field(description="The text's position in the request")
    score: float
    text: str | None = None


class CompareRequest(_WithInputs):
    _pairs: ClassVar[bool] = True
    inputs: PairInputs = Field(description="A string or a list of strings; [text, text_pair] pairs for classify; "
                               "for rerank the texts ranked against query")
    task: Literal["classify", "embed", "rerank"]
    query: str | None = Field(default=None, description="rerank: the query each input is scored against")
    top_n: Annotated[int, Field(ge=1)] | None = Field(default=None, description="rerank: the rankings' overlap "
                                                      "is measured at this depth (default 10)")
    teacher: ModelName | None = Field(default=None, description="Default: the first model with role teacher")
    student: ModelName | None = Field(default=None, description="Default: the first model with role student")

    @model_validator(mode="after")
    def _task_fields(self) -> CompareRequest:
        if self.task != "classify" and any(not isinstance(t, str) for t in self.texts):
            raise ValueError(f"task {self.task} takes texts, not [text, text_pair] pairs (pairs are for classify)")
        if self.task == "rerank":
            if self.query is None or not self.query.strip():
                raise ValueError("task rerank needs a query (a non-empty string)")
            _check_text(self.query, "query")
        elif self.query is not None or self.top_n is not None:
            raise ValueError("query and top_n belong to task rerank")
        return self


class ModelOutputs(BaseModel):
    model: str
    latency_ms: float = Field(description="This model's own work: tokenization plus its forward passes "
                              "(the two models run at once, sharing the compute thread)")
    tokenization_ms: float
    queue_ms: float = Field(description="Longest wait of an input for its batch")
    inference_ms: float = Field(description="Longest forward pass an input was part of")
    predictions: list[list[LabelScore]] | None = None
    embeddings: list[list[float]] | None = None
    ranking: list[RankedText] | None = Field(default=None, description="rerank: every input, best first")


class CompareResponse(BaseModel):
    task: str
    teacher: ModelOutputs
    student: ModelOutputs
    speedup: float = Field(description="teacher latency / student latency")
    label_agreement: float | None = Field(default=None, description="Share of inputs with the same top label")
    cosine: list[float] | None = Field(default=None, description="Per input, student vs teacher embedding")
    mean_cosine: float | None = None
    top_n: int | None = Field(default=None, description="rerank: the depth of top_n_overlap")
    top_n_overlap: float | None = Field(default=None, description="rerank: share of the teacher's top n that is in "
                                        "the student's top n")
    spearman: float | None = Field(default=None, description="rerank: Spearman rank correlation of the two "
                                   "models' scores over all inputs (None below two inputs or for a constant one)")


# -- OpenAI-compatible embeddings ------------------------------------------------------
class OpenAIEmbeddingRequest(BaseModel):
    model_config = ConfigDict(extra="allow")  # OpenAI clients send fields we ignore (user, ...)

    input: str | list[str] | list[int] | list[list[int]]
    model: ModelName
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: Annotated[int, Field(ge=1)] | None = None
    user: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _precheck(cls, data: Any) -> Any:
        return precheck(data, "input", token_ids=True)


class OpenAIEmbedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class OpenAIUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class OpenAIEmbeddingResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[OpenAIEmbedding]
    model: str
    usage: OpenAIUsage


class ErrorBody(BaseModel):
    error: str
    error_type: Literal["validation", "payload_too_large", "not_found", "unsupported", "overloaded",
                        "unauthorized", "timeout", "internal"]
