"""deploy's pieces that run without a container engine: what a podman build is given of the host's
pip configuration, and the README line written from make test-image's results."""

from __future__ import annotations

import json
import sys

from deploy.image import host_paths, pip_mounts, pip_settings

from .support import ROOT


def test_host_paths_mount_whole_indexes_once(tmp_path):
    (tmp_path / "pypi" / "simple").mkdir(parents=True)
    (tmp_path / "pypi" / "files").mkdir()
    (tmp_path / "wheels" / "sub").mkdir(parents=True)
    (tmp_path / "ca.pem").write_text("cert")
    settings = {"extra-index-url": f"file://{tmp_path}/pypi/simple https://example.org/simple",
                "find-links": f"{tmp_path}/wheels {tmp_path}/wheels/sub {tmp_path}/missing",
                "cert": str(tmp_path / "ca.pem"), "timeout": "60"}
    # A simple index's pages link to ../../files: its parent is mounted; nested and missing paths are not.
    assert host_paths(settings) == sorted([tmp_path / "ca.pem", tmp_path / "pypi", tmp_path / "wheels"])


def test_pip_mounts_carry_this_hosts_effective_settings(tmp_path):
    settings = pip_settings(sys.executable)
    mounts = pip_mounts(tmp_path)
    conf = (tmp_path / "pip.conf").read_text()
    assert mounts[0] == f"{tmp_path / 'pip.conf'}:/etc/pip.conf:ro" and conf.startswith("[global]\n")
    for key, value in settings.items():
        assert f"{key} = {value}\n" in conf
    for path in host_paths(settings):
        assert f"{path}:{path}:ro" in mounts


def test_report_writes_the_readme_line_from_the_results(tmp_path):
    from deploy.report import main

    results = json.loads((ROOT / "deploy" / "results" / "image.json").read_text())
    (tmp_path / "image.json").write_text(json.dumps(results))
    readme = tmp_path / "README.md"
    readme.write_text("before\n<!-- image:start -->\nPLACEHOLDER\n<!-- image:end -->\nafter\n")
    main(["--results", str(tmp_path / "image.json"), "--readme", str(readme)])
    text = readme.read_text()
    assert text.startswith("before\n") and text.endswith("after\n") and "PLACEHOLDER" not in text
    flat = " ".join(text.split())
    assert f"**{results['size_bytes'] / 1e9:.2f} GB**" in flat and f"**{results['cold_start_seconds']:.1f} s**" in flat
    assert f"{results['sigterm']['answered_200']}/{results['sigterm']['in_flight']} answered" in flat


def test_build_records_its_base_by_id_and_digest(tmp_path):
    """The image's base (mmdebstrap's, made here: no registry vouches for it) is written down by content
    address before each build; an engine that only answers inspect and build stands in for podman."""
    from deploy import image

    base_id, digest = "a" * 64, "sha256:" + "b" * 64
    engine = tmp_path / "engine"
    engine.write_text("#!/bin/sh\n"
                      f'if [ "$1 $2" = "image inspect" ]; then echo \'[{{"Id": "{base_id}", "Digest": "{digest}", '
                      '"RepoDigests": [], "Created": "2026-12-01T00:00:00Z"}]\'; fi\n'
                      f'echo "$*" >> {tmp_path / "calls"}\n')
    engine.chmod(0o755)
    record = tmp_path / "base.json"
    image.build(str(engine), base_image=image.LOCAL_BASE, record=record)
    saved = json.loads(record.read_text())
    assert (saved["ref"], saved["id"], saved["digest"]) == (image.LOCAL_BASE, base_id, digest)
    assert "mmdebstrap" in saved["made_by"]
    calls = (tmp_path / "calls").read_text().splitlines()
    assert calls[0] == f"image inspect {image.LOCAL_BASE}" and f"PYTHON_IMAGE={image.LOCAL_BASE}" in calls[1]
    # The same base again: the record (and its date) stays as it was, so a rebuild leaves the repository clean.
    record.write_text(record.read_text().replace(saved["recorded"], "earlier"))
    image.build(str(engine), base_image=image.LOCAL_BASE, record=record)
    assert json.loads(record.read_text())["recorded"] == "earlier"
    assert image.BASE_RECORD == ROOT / "deploy" / "results" / "base.json"
