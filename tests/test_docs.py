"""The README and docs/ (issue 28): a README a newcomer reads in five minutes, every generated section in
exactly one page with a command that writes it, links that lead somewhere, and publishing apart from
measuring (the measuring make targets write no page)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from lab.readme import page_of, rebase, write_section

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
MARKER = re.compile(r"<!-- ([a-z0-9-]+):start -->")


def test_the_readme_is_short():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 250


def test_every_generated_section_is_in_one_page_and_make_docs_writes_it():
    seen: dict[str, list[str]] = {}
    for page in PAGES:
        for name in MARKER.findall(page.read_text()):
            seen.setdefault(name, []).append(page.name)
    assert seen and all(len(p) == 1 for p in seen.values()), seen
    make_docs = subprocess.run(["make", "-n", "docs"], cwd=ROOT, capture_output=True, text=True).stdout
    sections = {"results", "variants", "ablation", "bench", "bench-paper", "peers", "loop-cost", "loop-profile", "soak",
                "hardening",
                "model-speed", "train-speed", "playground", "image"}
    assert set(seen) <= sections, set(seen) - sections
    for command in ("experiments.report", "experiments.variants --report-only", "experiments.ablation --report-only",
                    "experiments.evidence --docs-only",
                    "bench report", "bench.peers --report-only", "bench.loop_cost --report-only",
                    "bench.loop_profile --report-only",
                    "bench.soak --report-only", "bench.hardening --report-only", "bench.model_speed --report-only",
                    "bench.train_speed --report-only", "bench.playground --report-only", "deploy.report"):
        assert command in make_docs, command


def test_measuring_targets_write_no_page():
    for target in ("models", "bench", "bench-model", "bench-train", "ablation", "soak", "test-image"):
        dry = subprocess.run(["make", "-n", "-W", "artifacts/results.json", target], cwd=ROOT, capture_output=True,
                             text=True).stdout
        assert "--readme" not in dry and "experiments.report" not in dry, (target, dry)


def test_relative_links_resolve():
    missing = []
    for page in PAGES:
        text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
        for target in re.findall(r"\]\((?!https?:|#|mailto:)([^)\s#]+)", text):
            if not (page.parent / target).exists():
                missing.append(f"{page.relative_to(ROOT)}: {target}")
    assert not missing, missing


def test_a_section_moved_to_docs_is_written_there_with_its_links_rebased(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "README.md").write_text("# r\n")
    page = tmp_path / "docs" / "page.md"
    page.write_text("# p\n<!-- s:start -->\nold\n<!-- s:end -->\n")
    (tmp_path / "bench").mkdir()
    write_section(tmp_path / "README.md", "s", "![plot](bench/x.png) [doc](docs/other.md#a) [web](https://x.org)")
    assert page_of(tmp_path / "README.md", "s") == page
    assert "![plot](../bench/x.png) [doc](other.md#a) [web](https://x.org)" in page.read_text()
    assert (tmp_path / "README.md").read_text() == "# r\n"
    assert rebase("[a](x.md)", tmp_path, tmp_path) == "[a](x.md)"
