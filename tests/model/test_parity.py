"""Our modules against transformers' own, in both directions, float32 on CPU."""

from __future__ import annotations

import pytest
import torch

import model
from tests.model.hf_reference import hf_class, hf_config, hf_output, padded_batch, perturb

CLASSES = [
    "BertModel",
    "BertForMaskedLM",
    "BertForSequenceClassification",
    "DistilBertModel",
    "DistilBertForMaskedLM",
    "DistilBertForSequenceClassification",
]
TOL = 1e-5


def _roundtrip(name: str, size: str, tmp_path) -> None:
    torch.manual_seed(0)
    hf = hf_class(name)(hf_config(name, size)).eval()
    perturb(hf)
    hf.save_pretrained(tmp_path / "hf")

    ours = model.load(tmp_path / "hf")
    assert type(ours).__name__ == name
    assert not ours.training

    ids, mask = padded_batch(hf.config.vocab_size, lengths=(16, 9, 4, 1))
    with torch.no_grad():
        ref = hf_output(hf, ids, mask)
        got = ours(ids, mask)
    assert got.shape == ref.shape
    real = mask.bool() if got.dim() == 3 else torch.ones(got.shape[0], dtype=torch.bool)
    assert (got[real] - ref[real]).abs().max().item() <= TOL

    # Reverse: our save -> transformers loads every tensor -> same outputs.
    model.save(ours, tmp_path / "ours")
    hf2, info = hf_class(name).from_pretrained(tmp_path / "ours", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert not info["mismatched_keys"]
    hf2.eval()
    with torch.no_grad():
        back = hf_output(hf2, ids, mask)
    assert (back[real] - got[real]).abs().max().item() <= TOL
    if name.endswith("SequenceClassification"):
        assert hf2.config.id2label == {0: "negative", 1: "neutral", 2: "positive"}


@pytest.mark.parametrize("name", CLASSES)
def test_parity_small(name, tmp_path):
    _roundtrip(name, "small", tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("name", CLASSES)
def test_parity_full_size(name, tmp_path):
    _roundtrip(name, "full", tmp_path)


def test_output_shapes_follow_the_contract():
    cfg = model.DistilBertConfig(vocab_size=50, hidden_size=16, num_layers=2, num_heads=2,
                                 intermediate_size=32, id2label={0: "a", 1: "b", 2: "c"})
    ids = torch.randint(0, 50, (2, 7))
    mask = torch.ones_like(ids)
    for cls, shape in [
        (model.DistilBertModel, (2, 7, 16)),
        (model.DistilBertForMaskedLM, (2, 7, 50)),
        (model.DistilBertForSequenceClassification, (2, 3)),
    ]:
        out = cls(cfg).eval()(ids, mask)
        assert isinstance(out, torch.Tensor) and out.shape == shape


def test_hidden_states_match_transformers(tmp_path):
    torch.manual_seed(0)
    hf = hf_class("BertModel")(hf_config("BertModel", "small")).eval()
    perturb(hf)
    hf.save_pretrained(tmp_path)
    ours = model.load(tmp_path)
    ids, mask = padded_batch(hf.config.vocab_size)
    with torch.no_grad():
        ref = hf(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
        got = ours.hidden_states(ids, mask)
    assert len(got) == len(ref) == hf.config.num_hidden_layers + 1
    for a, b in zip(got, ref, strict=True):
        assert (a[mask.bool()] - b[mask.bool()]).abs().max().item() <= TOL


def test_token_type_ids_match_transformers(tmp_path):
    torch.manual_seed(1)
    hf = hf_class("BertModel")(hf_config("BertModel", "small")).eval()
    perturb(hf)
    hf.save_pretrained(tmp_path)
    ours = model.load(tmp_path)
    ids, mask = padded_batch(hf.config.vocab_size, lengths=(10, 10))
    types = torch.zeros_like(ids)
    types[:, 5:] = 1
    with torch.no_grad():
        ref = hf(input_ids=ids, attention_mask=mask, token_type_ids=types).last_hidden_state
        got = ours(ids, mask, types)
    assert (got - ref).abs().max().item() <= TOL


def test_config_roundtrip_through_hf_json():
    import transformers

    ours = model.BertConfig(hidden_size=64, num_heads=4, num_layers=3, id2label={0: "x", 1: "y"})
    hf = transformers.BertConfig(**ours.to_hf_dict("BertModel"))
    back = model.config_from_hf_dict(hf.to_dict())
    assert back == ours
    d = model.DistilBertConfig(hidden_size=64, num_heads=4, num_layers=3)
    hf_d = transformers.DistilBertConfig(**d.to_hf_dict("DistilBertModel"))
    assert model.config_from_hf_dict(hf_d.to_dict()) == d


def test_paper_defaults():
    b, d = model.BertConfig(), model.DistilBertConfig()
    assert (b.vocab_size, b.max_position_embeddings, b.hidden_size, b.num_heads) == (30522, 512, 768, 12)
    assert (b.intermediate_size, b.num_layers, b.type_vocab_size, b.layer_norm_eps) == (3072, 12, 2, 1e-12)
    assert (d.num_layers, d.type_vocab_size, d.hidden_size, d.intermediate_size) == (6, 0, 768, 3072)
    assert model.BertModel(model.BertConfig(num_layers=1)).pooler is not None
    assert model.DistilBertModel(model.DistilBertConfig(num_layers=1)).pooler is None


def test_invalid_config_names_values():
    with pytest.raises(ValueError, match="768.*10"):
        model.BertConfig(hidden_size=768, num_heads=10)
