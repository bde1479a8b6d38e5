"""Hugging Face checkpoint directories <-> our modules.

The whole correspondence is the table below: our parameter names on the left, the
Hugging Face names on the right. ``load`` checks that every parameter is found with
the right shape and that every tensor in the file is used (or is one of the few
known-unused ones listed in ``_IGNORED``); anything else is an error, never a
partial load.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import torch
from torch import nn

from .bert import BertForMaskedLM, BertForSequenceClassification, BertModel
from .config import EncoderConfig, config_from_hf_dict
from .distilbert import DistilBertForMaskedLM, DistilBertForSequenceClassification, DistilBertModel
from .pooling import Pooling


class CheckpointError(ValueError):
    """A checkpoint directory that cannot be loaded as asked; the message says why."""


# ours -> Hugging Face, per family. Layer entries apply under layers.{i}.
_EMBEDDINGS = {
    "embeddings.word": "embeddings.word_embeddings",
    "embeddings.position": "embeddings.position_embeddings",
    "embeddings.token_type": "embeddings.token_type_embeddings",
    "embeddings.norm": "embeddings.LayerNorm",
    "pooler": "pooler.dense",
}
_LAYER = {
    "bert": {
        "attention.query": "attention.self.query",
        "attention.key": "attention.self.key",
        "attention.value": "attention.self.value",
        "attention.out": "attention.output.dense",
        "attention_norm": "attention.output.LayerNorm",
        "ffn.up": "intermediate.dense",
        "ffn.down": "output.dense",
        "ffn_norm": "output.LayerNorm",
    },
    "distilbert": {
        "attention.query": "attention.q_lin",
        "attention.key": "attention.k_lin",
        "attention.value": "attention.v_lin",
        "attention.out": "attention.out_lin",
        "attention_norm": "sa_layer_norm",
        "ffn.up": "ffn.lin1",
        "ffn.down": "ffn.lin2",
        "ffn_norm": "output_layer_norm",
    },
}
_LAYERS_PREFIX = {"bert": "encoder.layer", "distilbert": "transformer.layer"}
_HEADS = {
    "bert": {
        "head.transform": "cls.predictions.transform.dense",
        "head.norm": "cls.predictions.transform.LayerNorm",
        "head.bias": "cls.predictions.bias",
        "classifier": "classifier",
    },
    "distilbert": {
        "head.transform": "vocab_transform",
        "head.norm": "vocab_layer_norm",
        "head.bias": "vocab_projector.bias",
        "pre_classifier": "pre_classifier",
        "classifier": "classifier",
    },
}
# Tensors tied to others in the file: accepted if present and equal, never required.
_TIED = {
    "bert": {
        "cls.predictions.decoder.weight": "embeddings.word_embeddings.weight",
        "cls.predictions.decoder.bias": "cls.predictions.bias",
    },
    "distilbert": {"vocab_projector.weight": "embeddings.word_embeddings.weight"},
}
# Known tensors we never use: buffers, and BERT's next-sentence head.
_IGNORED = re.compile(r"(^|\.)(position_ids|token_type_ids)$|^cls\.seq_relationship\.")

CLASSES: dict[str, type[nn.Module]] = {
    c.architecture: c  # type: ignore[attr-defined]
    for c in (
        BertModel,
        BertForMaskedLM,
        BertForSequenceClassification,
        DistilBertModel,
        DistilBertForMaskedLM,
        DistilBertForSequenceClassification,
    )
}
_ALIASES = {"BertForPreTraining": "BertForMaskedLM"}  # NSP head dropped
TASKS = ("base", "mlm", "classification")


def file_sha256(path: Path) -> str:
    """SHA-256 of a file, read in 1 MiB blocks (checkpoints and assets are hundreds of MB)."""
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _hf_name(ours: str, family: str, task: str) -> str:
    """Our state_dict key -> the Hugging Face key for the same tensor."""
    encoder_prefix = "" if task == "base" else f"{family}."
    if ours.startswith("encoder."):
        ours = ours[len("encoder."):]
    elif task != "base":  # a head parameter
        module, _, leaf = ours.rpartition(".")
        if ours in _HEADS[family]:  # a bare parameter such as head.bias
            return _HEADS[family][ours]
        return f"{_HEADS[family][module]}.{leaf}"
    m = re.match(r"layers\.(\d+)\.(.+)\.(weight|bias)$", ours)
    if m:
        i, module, leaf = m.groups()
        return f"{encoder_prefix}{_LAYERS_PREFIX[family]}.{i}.{_LAYER[family][module]}.{leaf}"
    module, _, leaf = ours.rpartition(".")
    return f"{encoder_prefix}{_EMBEDDINGS[module]}.{leaf}"


def name_table(module: nn.Module) -> dict[str, str]:
    """Every parameter of ``module``: our name -> Hugging Face name."""
    family, task = module.family, module.task  # type: ignore[attr-defined]
    return {k: _hf_name(k, family, task) for k in module.state_dict()}


# -- reading -----------------------------------------------------------------------
def _read_config(path: Path) -> dict:
    f = path / "config.json"
    if not f.is_file():
        raise CheckpointError(f"{path}: no config.json (is this a Hugging Face model directory?)")
    try:
        return json.loads(f.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{f}: not valid JSON ({e})") from e


def _read_tensors(path: Path) -> dict[str, torch.Tensor]:
    st, pt = path / "model.safetensors", path / "pytorch_model.bin"
    if st.is_file():
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(st))
        except (SafetensorError, OSError, ValueError, RuntimeError) as e:
            raise CheckpointError(f"{st}: unreadable safetensors file, truncated or corrupt ({e})") from e
    if pt.is_file():
        try:
            return torch.load(pt, map_location="cpu", weights_only=True)
        except Exception as e:  # pickle and zip errors have no common base
            raise CheckpointError(f"{pt}: unreadable PyTorch weights file ({e})") from e
    raise CheckpointError(f"{path}: no model.safetensors or pytorch_model.bin")


def _normalise_keys(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # TF-era checkpoints (bert-base-uncased) name LayerNorm parameters gamma/beta.
    out = {}
    for k, v in tensors.items():
        k = re.sub(r"LayerNorm\.gamma$", "LayerNorm.weight", k)
        k = re.sub(r"LayerNorm\.beta$", "LayerNorm.bias", k)
        out[k] = v
    return out


def _pick_class(hf_config: dict, cfg: EncoderConfig, head: str | None) -> type[nn.Module]:
    if head is not None:
        if head not in TASKS:
            raise CheckpointError(f"head must be one of {TASKS}, got {head!r}")
        for c in CLASSES.values():
            if c.family == cfg.family and c.task == head:  # type: ignore[attr-defined]
                return c
    archs = hf_config.get("architectures") or []
    if not archs:
        return BertModel if cfg.family == "bert" else DistilBertModel
    arch = _ALIASES.get(archs[0], archs[0])
    if arch not in CLASSES:
        raise CheckpointError(
            f"architecture {archs[0]!r} is not supported; supported: {sorted(CLASSES)} "
            "(or pass head='base' to load only the encoder)"
        )
    cls = CLASSES[arch]
    if cls.family != cfg.family:  # type: ignore[attr-defined]
        raise CheckpointError(f"architecture {arch!r} does not match model_type {cfg.family!r}")
    return cls


def load(
    path: str | Path,
    head: str | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
) -> nn.Module:
    """Load a Hugging Face-format directory into our module, in eval mode.

    ``head`` overrides the architecture in config.json: "base", "mlm" or
    "classification". Loading a smaller head than the file holds (say, the encoder of
    a classifier) drops that head's tensors; that is the one deliberate discard.
    """
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"{path}: not a directory")
    hf_config = _read_config(path)
    try:
        cfg = config_from_hf_dict(hf_config)
    except (ValueError, TypeError) as e:
        raise CheckpointError(f"{path / 'config.json'}: {e}") from e
    cls = _pick_class(hf_config, cfg, head)
    family, task = cls.family, cls.task  # type: ignore[attr-defined]
    tensors = _normalise_keys(_read_tensors(path))

    # A base model saved inside a head checkpoint has its keys under "bert." /
    # "distilbert."; a head checkpoint saved by an old tool may lack it. Align.
    prefix = f"{family}."
    has_prefix = any(k.startswith(prefix) for k in tensors)
    if task == "base" and has_prefix:
        tensors = {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in tensors.items()}
    elif task != "base" and not has_prefix:
        heads = set(_HEADS[family].values()) | set(_TIED[family])
        tensors = {
            k if any(k.startswith(h) for h in heads) else prefix + k: v for k, v in tensors.items()
        }

    add_pooler = family == "bert" and task != "mlm"
    if cls is BertModel:
        add_pooler = any(k.startswith("pooler.") for k in tensors)
        module = BertModel(cfg, add_pooler=add_pooler)  # type: ignore[arg-type]
    else:
        module = cls(cfg)

    table = name_table(module)
    expected = module.state_dict()
    state, missing, wrong_shape = {}, [], []
    for ours, theirs in table.items():
        if theirs not in tensors:
            missing.append(theirs)
            continue
        t = tensors[theirs]
        if t.shape != expected[ours].shape:
            wrong_shape.append(f"{theirs}: file {tuple(t.shape)} vs model {tuple(expected[ours].shape)}")
            continue
        state[ours] = t
    used = set(table.values())
    unexpected = []
    tied_prefix = "" if task == "base" else prefix
    for k, t in tensors.items():
        if k in used or _IGNORED.search(k):
            continue
        if k in _TIED[family]:
            target = _TIED[family][k]
            target = target if target.startswith("cls.") else tied_prefix + target
            if target in tensors and not torch.equal(tensors[target], t):
                raise CheckpointError(
                    f"{path}: {k} is not tied to {target} (values differ); "
                    "untied decoders are not supported"
                )
            continue
        if not add_pooler and re.match(rf"^({re.escape(prefix)})?pooler\.", k):
            continue  # a pooler the chosen head does not use (as transformers does)
        if head is not None and task == "base" and not k.startswith(("embeddings.", _LAYERS_PREFIX[family])):
            continue  # asked for the encoder only: head tensors dropped on purpose
        unexpected.append(k)
    if missing or wrong_shape or unexpected:
        lines = [f"{path}: cannot load as {cls.__name__}"]
        if missing:
            lines.append(f"  missing keys ({len(missing)}): {', '.join(missing[:10])}")
        if wrong_shape:
            lines.append(f"  shape mismatches ({len(wrong_shape)}): {'; '.join(wrong_shape[:10])}")
        if unexpected:
            lines.append(f"  unexpected keys ({len(unexpected)}): {', '.join(unexpected[:10])}")
        raise CheckpointError("\n".join(lines))
    module.load_state_dict(state, strict=True)
    module.eval()
    return module.to(device=device, dtype=dtype) if dtype else module.to(device)


def read_pooling(path: str | Path) -> Pooling:
    """Default sentence pooling: sentence-transformers' 1_Pooling/config.json, else mean."""
    f = Path(path) / "1_Pooling" / "config.json"
    if f.is_file():
        cfg = json.loads(f.read_text())
        if cfg.get("pooling_mode_cls_token"):
            return "cls"
    return "mean"


# -- writing -----------------------------------------------------------------------
def save(module: nn.Module, path: str | Path, tokenizer: object | None = None) -> Path:
    """Write config.json + model.safetensors (+ tokenizer files) that transformers loads."""
    from safetensors.torch import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    cfg: EncoderConfig = module.config  # type: ignore[assignment]
    hf = cfg.to_hf_dict(module.architecture)  # type: ignore[attr-defined]
    state = module.state_dict()
    tensors = {theirs: state[ours].detach().to("cpu").contiguous().clone()
               for ours, theirs in name_table(module).items()}
    tmp = path / "model.safetensors.tmp"
    save_file(tensors, str(tmp), metadata={"format": "pt"})
    tmp.replace(path / "model.safetensors")  # atomic: no half-written checkpoint
    (path / "config.json").write_text(json.dumps(hf, indent=2) + "\n")
    if tokenizer is not None:
        tokenizer.save(path)  # type: ignore[attr-defined]
    return path
