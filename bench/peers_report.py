"""The peer race's report: peers.json, peers.md, peers.png and the README's peer-race section,
all generated from one race (bench/peers.py)."""

from __future__ import annotations

import json
from pathlib import Path

from lab.readme import write_section

SECTION = "peers"
FIDELITY_BAR = 0.99  # min cosine to the fp32 reference for "equal fidelity" (issue 13)


def _level(row: dict, key: str, field: str) -> float | None:
    lv = row["levels"].get(key)
    return lv[field] if lv else None


def _min_cos(row: dict) -> float:
    return (row.get("fidelity") or {}).get("min_cosine", float("nan"))


def _best(rows: list[dict], server: str, min_cos: float | None = None, precision: str | None = None) -> dict | None:
    """The engine of ``server`` with the highest c=32 throughput, among those that qualify."""
    pool = [r for r in rows if r["engine"]["server"] == server and _level(r, "single_c32", "inputs_per_s")
            and (min_cos is None or _min_cos(r) >= min_cos)
            and (precision is None or r["engine"]["precision"] == precision)]
    return max(pool, key=lambda r: _level(r, "single_c32", "inputs_per_s")) if pool else None


def _compare(ours: dict | None, theirs: dict | None) -> dict | None:
    if not ours or not theirs:
        return None
    return {"ours": ours["name"], "theirs": theirs["name"],
            "ours_min_cosine": _min_cos(ours), "theirs_min_cosine": _min_cos(theirs),
            "throughput_ratio_c32": _level(ours, "single_c32", "inputs_per_s")
            / _level(theirs, "single_c32", "inputs_per_s"),
            "p50_ratio_c1": _level(ours, "single_c1", "p50_ms") / _level(theirs, "single_c1", "p50_ms"),
            "throughput_ratio_batch16": (_level(ours, "batch16_c8", "inputs_per_s") or float("nan"))
            / (_level(theirs, "batch16_c8", "inputs_per_s") or float("nan"))}


def summary(data: dict) -> dict:
    rows = data["results"]
    return {
        # the target's comparison: best of each side among engines at fidelity >= the bar
        "at_fidelity": _compare(_best(rows, "ours", FIDELITY_BAR), _best(rows, "infinity", FIDELITY_BAR)),
        "int8_vs_int8": _compare(_best(rows, "ours", precision="int8"), _best(rows, "infinity", precision="int8")),
        "best_vs_best": _compare(_best(rows, "ours"), _best(rows, "infinity")),
        "fidelity_bar": FIDELITY_BAR,
    }


def _f(x: float | None, fmt: str) -> str:
    return "–" if x is None or x != x else format(x, fmt)


def table(data: dict) -> str:
    lines = ["| server on the same weights | c=1 p50 (ms) | c=32 inputs/s | 16-input requests, c=8: inputs/s "
             "| fidelity to fp32 (min / mean cosine) | other load (cores) |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in data["results"]:
        fid = r.get("fidelity") or {}
        foreign = [lv["foreign_cores"] for lv in r["levels"].values()]
        lines.append(f"| {r['name']} | {_f(_level(r, 'single_c1', 'p50_ms'), '.2f')} "
                     f"| {_f(_level(r, 'single_c32', 'inputs_per_s'), '.0f')} "
                     f"| {_f(_level(r, 'batch16_c8', 'inputs_per_s'), '.0f')} "
                     f"| {_f(fid.get('min_cosine'), '.4f')} / {_f(fid.get('mean_cosine'), '.4f')} "
                     f"| {_f(max(foreign) if foreign else None, '.2f')} |")
    return "\n".join(lines)


def _verdict(c: dict | None, what: str, targets: bool) -> str:
    if not c:
        return f"- {what}: no engine qualifies on one side."
    tp, p50 = c["throughput_ratio_c32"], c["p50_ratio_c1"]
    line = (f"- {what}: **{c['ours']}** (min cosine {c['ours_min_cosine']:.4f}) vs **{c['theirs']}** "
            f"({c['theirs_min_cosine']:.4f}): c=32 throughput **{tp:.2f}×**, c=1 p50 **{p50:.2f}×**, "
            f"16-input requests {c['throughput_ratio_batch16']:.2f}×")
    if targets:
        ok = tp >= 1.1 and p50 <= 0.9
        line += f" — target ≥ 1.1× and ≤ 0.9×: **{'met' if ok else 'missed'}**"
    return line + "."


def section(data: dict, out: str) -> str:
    s = data["summary"]
    e = data["environment"]
    peers = e.get("peers", {})
    foreign = [lv["foreign_cores"] for r in data["results"] for lv in r["levels"].values()]
    loads = [lv["load_average"] for r in data["results"] for lv in r["levels"].values() if "load_average" in lv]
    # The load average counts the race's own client and server threads; only other processes' CPU
    # says whether the machine was shared.
    busy = bool(foreign) and max(foreign) > 0.25
    load_note = (f" The 1-minute load average (median per engine and level) was {min(loads):.1f} to {max(loads):.1f} "
                 f"(median {sorted(loads)[len(loads) // 2]:.1f}) on {e.get('cores')} cores"
                 + (": every number here was measured on an oversubscribed machine." if busy else
                    ", the race's own client and servers; no other work ran.") if loads else "")
    lines = [
        f"Measured by `make bench-peers` on {data['created']} ({e.get('cpu')}, {e.get('cores')} cores; "
        f"torch {e.get('torch')}; infinity-emb {peers.get('infinity-emb', '?')} with optimum "
        f"{peers.get('optimum', '?')}, onnxruntime {peers.get('onnxruntime', '?')}, torch {peers.get('torch', '?')}). "
        f"Every server serves `{Path(data.get('source', data['model'])).name}`; one lean client, `/v1/embeddings`, "
        f"{data['rounds']} rounds of {data['block_s']:.0f}-second blocks per engine and level, engines "
        f"alternating (order rotated each round); medians of the blocks. Fidelity: min and mean cosine of each "
        f"engine's vectors to transformers' fp32 model with mean pooling, over the race's {data['sentences']} "
        "sentences.",
        "",
        table(data),
        "",
        _verdict(s["at_fidelity"], f"Best CPU path at fidelity ≥ {s['fidelity_bar']}", targets=True),
        _verdict(s["int8_vs_int8"], "int8 against int8", targets=False),
        _verdict(s["best_vs_best"], "Fastest against fastest, whatever the fidelity", targets=False),
        "",
        f"Other processes on this shared machine used up to {max(foreign) if foreign else 0:.2f} cores during a "
        f"block (median {sorted(foreign)[len(foreign) // 2] if foreign else 0:.2f}); the alternating blocks spread "
        f"that over every engine.{load_note} Raw blocks, per-request CPU and versions: `{out}/peers.json`; "
        f"plot: `{out}/peers.png`.",
    ]
    return "\n".join(lines)


def plot(data: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = data["results"]
    names = [r["name"] for r in rows]
    colors = ["tab:orange" if r["engine"]["server"] == "ours" else "tab:blue" for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.2), dpi=110, sharey=True)
    for ax, (key, field, title) in zip(axes, (("single_c1", "p50_ms", "c=1 p50 latency (ms), lower is better"),
                                              ("single_c32", "inputs_per_s", "c=32 inputs/s"),
                                              ("batch16_c8", "inputs_per_s", "16-input requests, c=8: inputs/s")),
                                       strict=True):
        vals = [_level(r, key, field) or 0 for r in rows]
        ax.barh(names, vals, color=colors)
        for y, (v, r) in enumerate(zip(vals, rows, strict=True)):
            ax.text(v, y, f" {v:.1f}" if field == "p50_ms" else f" {v:.0f}", va="center", fontsize=7)
            if key == "single_c32":
                ax.text(0, y, f" cos≥{_min_cos(r):.3f}", va="center", fontsize=6, color="white")
        ax.set_title(title, fontsize=9)
        ax.grid(axis="x", alpha=0.3)
    axes[0].invert_yaxis()
    fig.suptitle("Peer race on all-MiniLM-L6-v2 (orange: ours, blue: infinity-emb)", fontsize=10)
    fig.tight_layout()
    fig.savefig(out / "peers.png")
    plt.close(fig)


def write_all(data: dict, out: Path, readme: Path | None = None) -> None:
    out.mkdir(parents=True, exist_ok=True)
    data["summary"] = summary(data)
    (out / "peers.json").write_text(json.dumps(data, indent=2) + "\n")
    try:
        shown = out.resolve().relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        shown = str(out)
    text = section(data, shown)
    (out / "peers.md").write_text("# Peer race\n\n" + text + "\n")
    plot(data, out)
    if readme is not None:
        write_section(readme, SECTION, text)
    print(text)
