"""Bad checkpoints fail loudly with a message that names the problem."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

import model
from model import CheckpointError
from tests.model.hf_reference import hf_class, hf_config, padded_batch, perturb


@pytest.fixture
def hf_dir(tmp_path):
    torch.manual_seed(0)
    hf = hf_class("BertForSequenceClassification")(hf_config("BertForSequenceClassification", "small"))
    perturb(hf)
    hf.save_pretrained(tmp_path / "ckpt")
    return tmp_path / "ckpt"


def test_missing_directory(tmp_path):
    with pytest.raises(CheckpointError, match="not a directory"):
        model.load(tmp_path / "nope")


def test_missing_config(hf_dir):
    (hf_dir / "config.json").unlink()
    with pytest.raises(CheckpointError, match="no config.json"):
        model.load(hf_dir)


def test_missing_weights(hf_dir):
    (hf_dir / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="no model.safetensors or pytorch_model.bin"):
        model.load(hf_dir)


def test_truncated_safetensors(hf_dir):
    f = hf_dir / "model.safetensors"
    data = f.read_bytes()
    f.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        model.load(hf_dir)


def test_other_model_type(hf_dir):
    cfg = json.loads((hf_dir / "config.json").read_text())
    cfg["model_type"] = "gpt2"
    (hf_dir / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="unsupported model_type 'gpt2'"):
        model.load(hf_dir)


def test_unsupported_architecture(hf_dir):
    cfg = json.loads((hf_dir / "config.json").read_text())
    cfg["architectures"] = ["BertForQuestionAnswering"]
    (hf_dir / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="BertForQuestionAnswering"):
        model.load(hf_dir)


def test_shape_mismatch(hf_dir):
    cfg = json.loads((hf_dir / "config.json").read_text())
    cfg["intermediate_size"] = 48
    (hf_dir / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"shape mismatches.*intermediate\.dense\.weight"):
        model.load(hf_dir)


def test_missing_key_is_named(hf_dir):
    f = hf_dir / "model.safetensors"
    t = load_file(f)
    del t["bert.encoder.layer.1.output.LayerNorm.bias"]
    save_file(t, f)
    msg = r"missing keys \(1\): bert\.encoder\.layer\.1\.output\.LayerNorm\.bias"
    with pytest.raises(CheckpointError, match=msg):
        model.load(hf_dir)


def test_unexpected_key_is_named(hf_dir):
    f = hf_dir / "model.safetensors"
    t = load_file(f)
    t["bert.encoder.layer.2.attention.self.query.weight"] = torch.zeros(32, 32)
    save_file(t, f)
    with pytest.raises(CheckpointError, match=r"unexpected keys \(1\): bert\.encoder\.layer\.2"):
        model.load(hf_dir)


def test_pytorch_bin_with_gamma_beta_names(hf_dir, tmp_path):
    """TF-era checkpoints: pytorch_model.bin, LayerNorm gamma/beta, NSP head, decoder copy."""
    ref = model.load(hf_dir)
    t = load_file(hf_dir / "model.safetensors")
    renamed = {}
    for k, v in t.items():
        k = k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta")
        renamed[k] = v
    renamed["bert.embeddings.position_ids"] = torch.arange(64)[None]
    (hf_dir / "model.safetensors").unlink()
    torch.save(renamed, hf_dir / "pytorch_model.bin")
    got = model.load(hf_dir)
    ids, mask = padded_batch(120)
    with torch.no_grad():
        assert torch.equal(ref(ids, mask), got(ids, mask))


def test_corrupt_pytorch_bin(hf_dir):
    (hf_dir / "model.safetensors").unlink()
    (hf_dir / "pytorch_model.bin").write_bytes(b"not a zip file at all")
    with pytest.raises(CheckpointError, match="unreadable PyTorch weights"):
        model.load(hf_dir)


def test_encoder_only_from_classifier(hf_dir):
    full = model.load(hf_dir)
    enc = model.load(hf_dir, head="base")
    assert type(enc).__name__ == "BertModel"
    ids, mask = padded_batch(120)
    with torch.no_grad():
        assert torch.equal(full.encoder(ids, mask), enc(ids, mask))


def test_untied_decoder_is_refused(tmp_path):
    hf = hf_class("DistilBertForMaskedLM")(hf_config("DistilBertForMaskedLM", "small"))
    hf.save_pretrained(tmp_path)
    t = load_file(tmp_path / "model.safetensors")
    t["vocab_projector.weight"] = torch.randn_like(t["distilbert.embeddings.word_embeddings.weight"])
    save_file(t, tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError, match="not tied"):
        model.load(tmp_path)


def test_sentence_transformers_pooling_config(tmp_path):
    assert model.read_pooling(tmp_path) == "mean"
    (tmp_path / "1_Pooling").mkdir()
    (tmp_path / "1_Pooling" / "config.json").write_text(
        json.dumps({"pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False})
    )
    assert model.read_pooling(tmp_path) == "cls"
