"""The peer race end to end on a tiny model: real servers (ours, two engines), the lean client in
alternating blocks, fidelity against transformers, and the generated report."""

from __future__ import annotations

import argparse
import json

import pytest

from bench import peers, peers_report
from tests.fixtures import write_tiny


@pytest.fixture(scope="module")
def race(tmp_path_factory):
    root = tmp_path_factory.mktemp("peers")
    folder = write_tiny(root / "tiny", "bert", "base", seed=5, layers=2, pooling="mean")
    args = argparse.Namespace(model=str(folder), work=str(root / "work"), venv=str(root / "no-venv"),
                              engines=["ours, torch fp32", "ours, ONNX int8"], rounds=2, block_s=0.3, seed=0)
    return root, peers.race(args)


def test_every_engine_runs_every_level(race):
    _, data = race
    assert [r["name"] for r in data["results"]] == ["ours, torch fp32", "ours, ONNX int8"]
    for r in data["results"]:
        assert set(r["levels"]) == {lv.key for lv in peers.LEVELS}
        for key, lv in r["levels"].items():
            assert len(lv["blocks"]) == 2 and lv["errors"] == 0, (r["name"], key)  # one block per round
            assert lv["inputs_per_s"] > 0 and lv["p50_ms"] > 0
    assert data["sentences"] > 20


def test_fidelity_against_transformers(race):
    _, data = race
    fid = {r["name"]: r["fidelity"] for r in data["results"]}
    assert fid["ours, torch fp32"]["min_cosine"] > 0.9999  # our fp32 is transformers' fp32
    assert 0.9 < fid["ours, ONNX int8"]["min_cosine"] < 1.0  # int8: close, not the same


def test_report_and_readme_section(race):
    root, data = race
    readme = root / "README.md"
    readme.write_text("# x\n\n<!-- peers:start -->\nold\n<!-- peers:end -->\nafter\n")
    out = root / "out"
    peers_report.write_all(data, out, readme)
    text = readme.read_text()
    assert "old" not in text and text.endswith("<!-- peers:end -->\nafter\n")
    assert "| ours, ONNX int8 |" in text and "Measured by `make bench-peers`" in text
    saved = json.loads((out / "peers.json").read_text())
    assert saved["summary"]["at_fidelity"] is None  # no infinity engine in this race
    assert (out / "peers.png").stat().st_size > 10_000 and (out / "peers.md").is_file()


def test_summary_compares_the_best_of_each_side():
    def row(name, server, precision, c32, c1, cos):
        return {"name": name, "engine": {"server": server, "precision": precision}, "fidelity": {"min_cosine": cos},
                "levels": {"single_c32": {"inputs_per_s": c32}, "single_c1": {"p50_ms": c1},
                           "batch16_c8": {"inputs_per_s": c32 * 2}}}

    data = {"results": [row("ours fp32", "ours", "fp32", 300, 9, 1.0), row("ours int8", "ours", "int8", 500, 7, 0.97),
                        row("inf fp32", "infinity", "fp32", 250, 11, 1.0),
                        row("inf int8", "infinity", "int8", 400, 10, 0.9)]}
    s = peers_report.summary(data)
    assert (s["at_fidelity"]["ours"], s["at_fidelity"]["theirs"]) == ("ours fp32", "inf fp32")
    assert s["at_fidelity"]["throughput_ratio_c32"] == pytest.approx(1.2)
    assert (s["int8_vs_int8"]["ours"], s["int8_vs_int8"]["theirs"]) == ("ours int8", "inf int8")
    assert s["best_vs_best"]["p50_ratio_c1"] == pytest.approx(0.7)
