"""Settings sources: flags (init values) over DISTIL_* environment over the DISTIL_CONFIG file over defaults."""

from __future__ import annotations

import json

import pytest

from app.settings import Settings, load_settings

MODELS = [{"name": "m", "path": "ckpt", "role": "student"}]


def test_precedence_file_then_environment_then_flags(tmp_path, monkeypatch):
    cfg = tmp_path / "serve.yaml"
    cfg.write_text("models:\n  - {name: m, path: ckpt, role: student}\nport: 9001\nmax_batch_size: 4\n"
                   "max_wait_ms: 3.5\n")
    monkeypatch.delenv("DISTIL_CONFIG", raising=False)
    monkeypatch.setenv("DISTIL_MAX_BATCH_SIZE", "8")
    s = load_settings(cfg, port=9002)
    assert s.port == 9002  # flag over file
    assert s.max_batch_size == 8  # environment over file
    assert s.max_wait_ms == 3.5  # file over default
    assert s.max_queue_size == Settings.model_fields["max_queue_size"].default  # default
    assert [m.name for m in s.models] == ["m"]


def test_distil_config_names_the_file(tmp_path, monkeypatch):
    cfg = tmp_path / "serve.json"
    cfg.write_text(json.dumps({"models": MODELS, "port": 9003}))
    monkeypatch.setenv("DISTIL_CONFIG", str(cfg))
    assert Settings().port == 9003 and load_settings().port == 9003
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"models": MODELS, "port": 9004}))
    assert load_settings(other).port == 9004  # an explicit file wins over DISTIL_CONFIG
    assert Settings().port == 9003  # and only for that call


def test_a_bad_file_value_is_refused_with_its_name(tmp_path, monkeypatch):
    cfg = tmp_path / "serve.json"
    cfg.write_text(json.dumps({"models": MODELS, "max_batch_size": 0}))
    monkeypatch.delenv("DISTIL_CONFIG", raising=False)
    with pytest.raises(ValueError, match="max_batch_size"):
        load_settings(cfg)


def test_ops_port_is_off_by_default_and_must_differ_from_the_port():
    assert Settings(models=MODELS).ops_port is None
    assert Settings(models=MODELS, ops_port=9000).ops_port == 9000
    with pytest.raises(ValueError, match="ops_port"):
        Settings(models=MODELS, port=9000, ops_port=9000)
