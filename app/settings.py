"""Service settings: one pydantic-settings class, environment prefix DISTIL_.

Models are configured, not hard-coded: a list of named checkpoints with a role.
From the environment (nested values as JSON):

    DISTIL_MODELS='[{"name":"student","path":"artifacts/student","role":"student"}]'

or from a YAML/JSON file named by DISTIL_CONFIG. Precedence, highest first: values passed to
``Settings(...)`` (command-line flags), DISTIL_* environment variables, the file, the defaults.
"""

from __future__ import annotations

import json
import os
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

Role = Literal["teacher", "student", "other"]
BACKENDS = ("torch", "onnx")
PRECISIONS = ("fp32", "int8", "int8_mixed", "fp16", "bf16")
# What each backend can run on each kind of device.
VALID_PRECISIONS = {("torch", "cpu"): ("fp32", "int8"), ("torch", "cuda"): ("fp32", "fp16", "bf16"),
                    ("onnx", "cpu"): ("fp32", "int8", "int8_mixed"), ("onnx", "cuda"): ("fp32",)}
_DTYPE_PRECISION = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}


def device_type(device: str) -> str:
    """cpu or cuda for a device setting; auto: what this machine has (model.device, the one resolver)."""
    if device == "auto":
        from model.device import resolve_device

        return resolve_device(device).type
    return device.split(":")[0]


# A model's name: configured here, sent by clients (app/api/schemas.py), echoed in errors and labels.
MODEL_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._\-]*$"
MAX_MODEL_NAME = 64


class ModelSpec(BaseModel):
    name: str = Field(pattern=MODEL_NAME_PATTERN, max_length=MAX_MODEL_NAME)
    path: Path
    role: Role = "other"
    max_length: int | None = Field(default=None, ge=2, description="default: the model's positions")
    # What this entry serves. classify: /classify and /compare task=classify; embed: /embed, /v1/embeddings
    # and /compare task=embed. A request for the other task goes to the entry of the same role that serves
    # it (a classifier and a distinct embedding checkpoint per role). None: whatever the model can do.
    task: Literal["classify", "embed"] | None = None
    # How it runs: our torch modules (the reference) or an ONNX Runtime export of them (model/export.py);
    # precision fp32 | int8 on CPU (onnx also int8_mixed: Attention and FFN down-projections in fp32),
    # fp32 | fp16 | bf16 on CUDA (onnx on CUDA: fp32). None: the service's dtype.
    backend: str = "torch"
    precision: str | None = None
    # backend onnx: the SHA-256 of the export it serves (CHECKPOINT/onnx/PRECISION.onnx), recorded here, where the
    # service is configured, by `make models` (experiments/variants.py). The manifest beside an export catches
    # corruption; this catches an export replaced together with its manifest: a mismatch fails the load.
    sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")

    @field_validator("backend")
    @classmethod
    def _backend(cls, v: str) -> str:
        if v not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {v!r}")
        return v

    @field_validator("precision")
    @classmethod
    def _precision(cls, v: str | None) -> str | None:
        if v is not None and v not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {v!r}")
        return v

    @model_validator(mode="after")
    def _sha256_names_an_export(self) -> ModelSpec:
        if self.sha256 is not None and self.backend != "onnx":
            raise ValueError(f"model {self.name}: sha256 is the digest of an ONNX export; backend {self.backend!r} "
                             "serves none (set backend onnx, or drop sha256)")
        return self


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DISTIL_", extra="ignore")

    models: list[ModelSpec] = Field(
        default_factory=lambda: [
            ModelSpec(name="student", path=Path("artifacts/student"), role="student"),
            ModelSpec(name="teacher", path=Path("artifacts/teacher"), role="teacher"),
        ]
    )
    default_model: str | None = None  # None: the first student, else the first model
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"  # auto: fp32 on CPU, fp16 on CUDA
    threads: int | None = Field(default=None, ge=1, description="torch intra-op threads")

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    log_level: str = "info"

    # Dynamic batching, per model. Defaults measured on the 2-core CPU (README).
    max_batch_size: int = Field(default=32, ge=1)
    max_batch_tokens: int = Field(default=8192, ge=1)
    max_wait_ms: float = Field(default=1.0, ge=0)
    max_padding_ratio: float | None = Field(default=None, ge=1.0, description="a hard cap on a forward's padded/"
                                             "real tokens; None: the cost model alone cuts (app/core/batching.py)")
    forward_overhead_tokens: float | None = Field(default=None, ge=0, description="one forward's fixed cost in "
                                                  "padded tokens; None: measured per model at start-up")
    max_queue_size: int = Field(default=1024, ge=1, description="queued inputs per model before 429")
    max_queue_tokens: int = Field(default=131_072, ge=1, description="queued real tokens per model before 429")
    tokenize_workers: int = Field(default=2, ge=1, description="tokenizer threads per model")

    # Client limits.
    max_client_batch_size: int = Field(default=64, ge=1)
    max_body_bytes: int = Field(default=2_000_000, ge=1024)
    request_timeout_s: float = Field(default=30.0, gt=0)

    # Connections (uvicorn's limits, plus the body deadline the app enforces).
    body_timeout_s: float = Field(default=15.0, gt=0, description="a request body must arrive within this")
    limit_concurrency: int | None = Field(default=256, ge=1, description="connections before 503")
    keep_alive_s: float = Field(default=5.0, gt=0, description="idle keep-alive connections closed after this")
    header_timeout_s: float = Field(default=5.0, gt=0, description="a request head (request line and headers) "
                                    "must be whole this long after the connection opens or its first byte")
    max_header_bytes: int = Field(default=16_384, ge=1024, description="request line and headers larger than "
                                  "this: 431, also while they arrive")
    # The HTTP parser: httptools (auto's choice when installed) is the faster. Either way a head is held
    # to header_timeout_s and max_header_bytes while it arrives (app/connections.py).
    http: Literal["auto", "h11", "httptools"] = "auto"
    # A second port serving only /health, /ready and /metrics, with its own small connection limit: the
    # probes and Prometheus still get through when clients hold every connection of the API port. Off by
    # default (a fixed second port would collide between instances on one host); the image sets 9000.
    ops_port: int | None = Field(default=None, ge=1, le=65535)

    api_key: str | None = None
    auth_open_metrics: bool = True  # /health, /ready, /metrics stay open when an api_key is set
    expose_docs: bool | None = None  # /docs, /redoc, /openapi.json; None: open unless an api_key is set

    # Memory: at most this often (0: never), after a forward, the C heap's free pages go back to the
    # system and ONNX Runtime's CPU arena releases its unused chunks. Without it a long-running service's
    # RSS climbs to the largest batch shapes it has seen and stays there (see core/compute.py).
    heap_trim_interval_s: float = Field(default=1.0, ge=0)
    # glibc malloc arenas for the whole process (0: glibc's default of 8 per core); see core/compute.py.
    malloc_arenas: int = Field(default=2, ge=0)

    warmup: bool = True
    graceful_timeout_s: float = Field(default=30.0, ge=0, description="the whole shutdown, drain included")
    watchdog_forward_s: float = Field(default=60.0, gt=0, description="a forward running longer: /health 503")

    @field_validator("api_key")
    @classmethod
    def _api_key(cls, v: str | None) -> str | None:
        # A key read from a file or a secret often ends in a newline no client sends.
        if v is not None and not v.strip():
            raise ValueError("api_key (DISTIL_API_KEY) is set but empty, which would turn authentication off "
                             "without saying so: unset it to serve without a key, or set a key")
        return v.strip() if v is not None else None

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if v not in ("auto", "cpu", "cuda") and not (v.startswith("cuda:") and v[5:].isdigit()):
            raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {v!r}")
        return v

    @model_validator(mode="after")
    def _names(self) -> Settings:
        names = [m.name for m in self.models]
        if not names:
            raise ValueError("at least one model must be configured")
        if len(set(names)) != len(names):
            raise ValueError(f"model names must be unique, got {names}")
        if self.max_client_batch_size > self.max_queue_size:
            raise ValueError(f"max_client_batch_size ({self.max_client_batch_size}) must not exceed max_queue_size "
                             f"({self.max_queue_size}): such a request could never be queued")
        if self.ops_port is not None and self.ops_port == self.port:
            raise ValueError(f"ops_port ({self.ops_port}) must differ from port: the ops port is a second listener")
        if self.default_model is not None and self.default_model not in names:
            raise ValueError(f"default_model {self.default_model!r} is not one of {names}")
        return self

    def precision_of(self, spec: ModelSpec, device: str | None = None) -> str:
        """The precision ``spec`` runs at: its own, else the service's dtype (auto: fp16 on CUDA for torch)."""
        kind = device or device_type(self.device)
        if spec.precision:
            return spec.precision
        if spec.backend == "onnx" or (self.dtype == "auto" and kind == "cpu"):
            return "fp32"
        return "fp16" if self.dtype == "auto" else _DTYPE_PRECISION[self.dtype]

    @model_validator(mode="after")
    def _runnable(self) -> Settings:
        """Refuse a backend/precision the device cannot run, naming the ones it can."""
        if not any(m.precision or m.backend != "torch" for m in self.models):
            return self  # nothing asked beyond the dtype setting: no device probe needed
        kind = device_type(self.device)
        for m in self.models:
            p = self.precision_of(m, kind)
            valid = VALID_PRECISIONS[(m.backend, kind)]
            if p not in valid:
                raise ValueError(f"model {m.name!r}: precision {p!r} cannot run with backend {m.backend!r} on "
                                 f"{kind}; valid there: {', '.join(valid)}")
        return self

    @model_validator(mode="after")
    def _device_exists(self) -> Settings:
        """A device this machine does not have is refused at start-up, saying what it has (after the checks
        of what the device's kind could run, which need no such device)."""
        if self.device != "cpu":
            from model.device import resolve_device

            resolve_device(self.device)
        return self

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
                                   env_settings: PydanticBaseSettingsSource, **_: PydanticBaseSettingsSource,
                                   ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, env_settings, ConfigFileSource(settings_cls)  # no .env, no secrets dir

    @property
    def default_name(self) -> str:
        if self.default_model:
            return self.default_model
        students = [m.name for m in self.models if m.role == "student"]
        return students[0] if students else self.models[0].name


# The file named by --config; DISTIL_CONFIG when unset. A context variable, not a global,
# because pydantic-settings builds its sources in a classmethod that takes no arguments.
_config_file: ContextVar[Path | None] = ContextVar("config_file", default=None)


class ConfigFileSource(PydanticBaseSettingsSource):
    """Settings from a YAML or JSON file (by suffix; anything else is read as JSON)."""

    def __init__(self, settings_cls: type[BaseSettings]) -> None:
        super().__init__(settings_cls)
        path = _config_file.get() or os.environ.get("DISTIL_CONFIG")
        self.values = _read_file(Path(path)) if path else {}

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self.values.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self.values)


def _read_file(path: Path) -> dict[str, Any]:
    text = path.read_text()
    if path.suffix in (".yaml", ".yml"):
        import yaml

        return yaml.safe_load(text) or {}
    return json.loads(text)


def load_settings(config_file: str | Path | None = None, **overrides: Any) -> Settings:
    """Settings from the file (``config_file``, else DISTIL_CONFIG), the environment and the
    explicit overrides (e.g. --port), in increasing precedence."""
    token = _config_file.set(Path(config_file) if config_file else None)
    try:
        return Settings(**overrides)
    finally:
        _config_file.reset(token)
