"""Distinct classifier and embedding entries per role (issue 12 item 4): each entry's task in the
settings and /info; /embed, /v1/embeddings and /compare task=embed use the embedding entries,
/classify the classifiers; and /embed on the embedding models matches transformers within 1e-5."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import ModelSpec, Settings
from lab.assets import fetch
from tests.app.conftest import wait_ready
from tests.fixtures import write_tiny

TEXTS = ["A man is eating food.", "The stock market fell sharply today after the report.", "Hi"]


@pytest.fixture(scope="module")
def entries(ckpts, tmp_path_factory):
    """The layout make models writes to artifacts/serve.json: per role a classifier and an embedder
    (the teacher's embedder is the real all-MiniLM-L6-v2; the student's a tiny mean-pooling DistilBERT)."""
    root = tmp_path_factory.mktemp("embedders")
    return [
        ModelSpec(name="student", path=ckpts["student"], role="student", task="classify"),
        ModelSpec(name="teacher", path=ckpts["teacher"], role="teacher", task="classify"),
        ModelSpec(name="student-embedder", role="student", task="embed",
                  path=write_tiny(root / "student_embedder", "distilbert", "base", seed=4, pooling="mean")),
        ModelSpec(name="teacher-embedder", path=fetch("minilm"), role="teacher", task="embed"),
    ]


@pytest.fixture(scope="module")
def client(entries):
    with TestClient(create_app(Settings(models=entries, device="cpu", max_wait_ms=2.0))) as c:
        wait_ready(c)
        yield c


def _hf_embeddings(path, texts: list[str]) -> np.ndarray:
    """What a user would compute: transformers' AutoModel, mean pooling, L2 normalisation."""
    import transformers

    tok = transformers.AutoTokenizer.from_pretrained(path)
    m = transformers.AutoModel.from_pretrained(path).eval()
    b = tok(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        last = m(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).last_hidden_state
    mask = b["attention_mask"].unsqueeze(-1).float()
    pooled = (last * mask).sum(1) / mask.sum(1)
    return torch.nn.functional.normalize(pooled, dim=-1).numpy()


def test_info_shows_the_task_each_entry_serves(client):
    models = {m["name"]: m for m in client.get("/info").json()["models"]}
    assert {n: m["serves"] for n, m in models.items()} == {
        "student": ["classify"], "teacher": ["classify"], "student-embedder": ["embed"], "teacher-embedder": ["embed"]}
    assert models["teacher-embedder"]["task"] == "base" and models["student"]["task"] == "classification"


@pytest.mark.parametrize("name", ["student-embedder", "teacher-embedder"])
def test_embed_on_the_embedding_models_matches_transformers(client, entries, name):
    path = next(e.path for e in entries if e.name == name)
    r = client.post("/embed", json={"model": name, "inputs": TEXTS})
    assert r.status_code == 200, r.text
    assert r.json()["model"] == name
    got = np.asarray(r.json()["embeddings"])
    assert np.abs(got - _hf_embeddings(path, TEXTS)).max() <= 1e-5


def test_embedding_requests_go_to_the_roles_embedding_entry(client):
    # No model: the default (the first student) answers with its role's embedder.
    assert client.post("/embed", json={"inputs": TEXTS}).json()["model"] == "student-embedder"
    assert client.post("/embed", json={"model": "teacher", "inputs": TEXTS}).json()["model"] == "teacher-embedder"
    r = client.post("/v1/embeddings", json={"input": TEXTS, "model": "teacher"})
    assert r.status_code == 200 and r.json()["model"] == "teacher-embedder"
    r = client.post("/compare", json={"inputs": TEXTS, "task": "embed"})
    assert r.status_code == 200, r.text
    assert (r.json()["student"]["model"], r.json()["teacher"]["model"]) == ("student-embedder", "teacher-embedder")


def test_classification_requests_go_to_the_classifiers(client):
    assert client.post("/classify", json={"inputs": TEXTS}).json()["model"] == "student"
    r = client.post("/classify", json={"model": "teacher-embedder", "inputs": TEXTS})
    assert r.status_code == 200 and r.json()["model"] == "teacher"
    r = client.post("/compare", json={"inputs": TEXTS, "task": "classify"})
    assert (r.json()["student"]["model"], r.json()["teacher"]["model"]) == ("student", "teacher")


def test_a_task_no_entry_of_the_role_serves_is_a_clear_4xx(ckpts):
    only = [ModelSpec(name="student", path=ckpts["student"], role="student", task="classify")]
    with TestClient(create_app(Settings(models=only, device="cpu"))) as c:
        wait_ready(c)
        r = c.post("/embed", json={"inputs": ["hello"]})
        assert 400 <= r.status_code < 500
        assert "no student model is configured for embed" in r.json()["error"]


def test_settings_refuse_an_unknown_task(ckpts):
    with pytest.raises(ValueError, match="task"):
        ModelSpec(name="x", path=ckpts["student"], task="rerank")
