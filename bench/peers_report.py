"""The peer race's report: peers.json, peers.md, peers.png and the README's peer-race section,
all generated from one race (bench/peers.py).

The Pareto view (issue 29): every engine's c=32 throughput and c=1 p50 against its fidelity to fp32 (min
cosine), in one table (a column says which frontier an engine is on) and one plot (two panels, the frontiers
drawn). A server is on a frontier when no other server is at least as faithful (at the table's four
decimals, so float noise between fp32 engines decides nothing) and at least as fast, and better on one of
the two. The in-process anchor (sentence-transformers called without HTTP) is shown, not ranked: it pays no
client, no HTTP and no batching wait.
"""

from __future__ import annotations

import json
from pathlib import Path

from lab.readme import write_section

SECTION = "peers"
FIDELITY_BAR = 0.99  # min cosine to the fp32 reference for "equal fidelity" (issue 13)
FIDELITY_DECIMALS = 4  # fidelity compared as the table prints it
SERVERS = {"ours": ("ours", "tab:orange"), "infinity": ("infinity-emb", "tab:blue"),
           "litserve": ("LitServe", "tab:green"), "st": ("sentence-transformers in-process", "tab:purple")}
PARETO = (("single_c32", "inputs_per_s", True, "c=32"), ("single_c1", "p50_ms", False, "c=1"))
# Against each server peer, ours at equal or better fidelity: at least this c=32 throughput and at most this
# c=1 p50 (ratios ours / theirs); against the in-process anchor, at least this share of its c=32 throughput.
PEER_THROUGHPUT_TARGET, PEER_P50_TARGET, ANCHOR_TARGET = 1.3, 0.7, 0.8


def _level(row: dict, key: str, field: str) -> float | None:
    lv = row["levels"].get(key)
    return lv[field] if lv else None


def _min_cos(row: dict) -> float:
    return (row.get("fidelity") or {}).get("min_cosine", float("nan"))


def _in_process(row: dict) -> bool:
    return row["engine"]["server"] == "st"


def _fidelity(row: dict) -> float:
    """Min cosine to fp32 as the table prints it: engines that print alike tie."""
    return round(_min_cos(row), FIDELITY_DECIMALS)


def frontier(rows: list[dict], key: str, field: str, higher_is_better: bool) -> list[str]:
    """The servers on the Pareto frontier of ``field`` at level ``key`` against fidelity, most faithful first."""
    pool = [r for r in rows if not _in_process(r) and _level(r, key, field) is not None and _min_cos(r) == _min_cos(r)]

    def speed(r: dict) -> float:
        v = _level(r, key, field)
        return v if higher_is_better else -v

    def beats(o: dict, r: dict) -> bool:
        return (_fidelity(o) >= _fidelity(r) and speed(o) >= speed(r)
                and (_fidelity(o) > _fidelity(r) or speed(o) > speed(r)))

    on = [r for r in pool if not any(beats(o, r) for o in pool)]
    return [r["name"] for r in sorted(on, key=lambda r: (-_fidelity(r), -speed(r)))]


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


def per_engine(rows: list[dict]) -> list[dict]:
    """Every peer engine (server or the in-process anchor) against ours at equal or better fidelity (four
    decimals): our fastest at c=32 and, separately, our quickest at c=1 among those engines, and the targets."""
    out = []
    for peer in rows:
        if peer["engine"]["server"] == "ours" or _level(peer, "single_c32", "inputs_per_s") is None:
            continue
        pool = [r for r in rows if r["engine"]["server"] == "ours" and _fidelity(r) >= _fidelity(peer)]
        fast = max(pool, key=lambda r: _level(r, "single_c32", "inputs_per_s") or 0.0, default=None)
        quick = min(pool, key=lambda r: _level(r, "single_c1", "p50_ms") or float("inf"), default=None)
        anchor = _in_process(peer)
        entry = {"peer": peer["name"], "anchor": anchor, "peer_min_cosine": _min_cos(peer),
                 "ours_fastest": fast["name"] if fast else None, "ours_quickest": quick["name"] if quick else None}
        if fast is not None:
            entry["throughput_ratio_c32"] = (_level(fast, "single_c32", "inputs_per_s")
                                             / _level(peer, "single_c32", "inputs_per_s"))
        if quick is not None and not anchor:
            entry["p50_ratio_c1"] = _level(quick, "single_c1", "p50_ms") / _level(peer, "single_c1", "p50_ms")
        tp, p50 = entry.get("throughput_ratio_c32"), entry.get("p50_ratio_c1")
        entry["met"] = (tp is not None and tp >= ANCHOR_TARGET) if anchor else (
            tp is not None and p50 is not None and tp >= PEER_THROUGHPUT_TARGET and p50 <= PEER_P50_TARGET)
        out.append(entry)
    return out


def summary(data: dict) -> dict:
    rows = data["results"]
    return {
        # the target's comparison: best of each side among engines at fidelity >= the bar
        "at_fidelity": _compare(_best(rows, "ours", FIDELITY_BAR), _best(rows, "infinity", FIDELITY_BAR)),
        "int8_vs_int8": _compare(_best(rows, "ours", precision="int8"), _best(rows, "infinity", precision="int8")),
        "best_vs_best": _compare(_best(rows, "ours"), _best(rows, "infinity")),
        "litserve_at_fidelity": _compare(_best(rows, "ours", FIDELITY_BAR), _best(rows, "litserve", FIDELITY_BAR)),
        "anchor_at_fidelity": _compare(_best(rows, "ours", FIDELITY_BAR), _best(rows, "st", FIDELITY_BAR)),
        "frontier": {label: frontier(rows, key, field, higher) for key, field, higher, label in PARETO},
        "per_engine": per_engine(rows),
        "fidelity_bar": FIDELITY_BAR,
    }


def _f(x: float | None, fmt: str) -> str:
    return "–" if x is None or x != x else format(x, fmt)


def _on_frontier(row: dict, fronts: dict[str, list[str]]) -> str:
    if _in_process(row):
        return "anchor, not ranked"
    return ", ".join(label for label, names in fronts.items() if row["name"] in names) or "–"


def table(data: dict) -> str:
    fronts = data.get("summary", {}).get("frontier") or summary(data)["frontier"]
    lines = ["| engine on the same weights | c=1 p50 (ms) | c=32 inputs/s | 16-input requests, c=8: inputs/s "
             "| fidelity to fp32 (min / mean cosine) | Pareto frontier | other load (cores) |",
             "|---|---:|---:|---:|---:|---|---:|"]
    for r in data["results"]:
        fid = r.get("fidelity") or {}
        foreign = [lv["foreign_cores"] for lv in r["levels"].values()]
        lines.append(f"| {r['name']} | {_f(_level(r, 'single_c1', 'p50_ms'), '.2f')} "
                     f"| {_f(_level(r, 'single_c32', 'inputs_per_s'), '.0f')} "
                     f"| {_f(_level(r, 'batch16_c8', 'inputs_per_s'), '.0f')} "
                     f"| {_f(fid.get('min_cosine'), '.4f')} / {_f(fid.get('mean_cosine'), '.4f')} "
                     f"| {_on_frontier(r, fronts)} "
                     f"| {_f(max(foreign) if foreign else None, '.2f')} |")
    return "\n".join(lines)


def _has(data: dict, server: str) -> bool:
    return any(r["engine"]["server"] == server for r in data["results"])


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


def _versions(e: dict) -> str:
    peers, lit, st = e.get("peers") or {}, e.get("litserve") or {}, e.get("sentence_transformers") or {}
    parts = []
    if peers or not (lit or st):
        parts.append(f"infinity-emb {peers.get('infinity-emb', '?')} with optimum {peers.get('optimum', '?')}, "
                     f"onnxruntime {peers.get('onnxruntime', '?')}, torch {peers.get('torch', '?')}")
    if lit:
        parts.append(f"LitServe {lit.get('litserve', '?')} with transformers {lit.get('transformers', '?')}")
    if st:
        parts.append(f"sentence-transformers {st.get('sentence-transformers', '?')} with optimum "
                     f"{st.get('optimum', '?')}, onnxruntime {st.get('onnxruntime', '?')}")
    return "; ".join(parts)


def _pareto(data: dict) -> str:
    fronts = data["summary"].get("frontier") or {}
    said = [f"{label}: {', '.join(f'**{n}**' for n in names)}" for label, names in fronts.items() if names]
    anchors = [r["name"] for r in data["results"] if _in_process(r)]
    text = ("Pareto view (throughput at c=32 and p50 at c=1 against min cosine to fp32, compared at "
            f"{FIDELITY_DECIMALS} decimals): on the frontier, " + ("; ".join(said) if said else "no server") + ".")
    if anchors:
        text += (" The in-process anchor (" + ", ".join(anchors) + ") calls `encode` without HTTP on the "
                 "sentences a level holds at once (1 at c=1, 32 at c=32, 8 × 16 at the 16-input level); its p50 is "
                 "one call's, and it is drawn, not ranked.")
    return text


def _targets(entries: list[dict]) -> list[str]:
    """One line per peer engine: ours at equal or better fidelity against it, and whether the target holds."""
    lines = []
    for c in entries:
        if c.get("ours_fastest") is None:
            lines.append(f"- vs **{c['peer']}** (min cosine {c['peer_min_cosine']:.4f}): no engine of ours is as "
                         "faithful — **missed**.")
            continue
        mark = "**met**" if c["met"] else "**missed**"
        if c["anchor"]:
            lines.append(f"- vs **{c['peer']}** (min cosine {c['peer_min_cosine']:.4f}): through HTTP "
                         f"{c['ours_fastest']} gives **{c['throughput_ratio_c32']:.2f}×** its c=32 throughput "
                         f"(target ≥ {ANCHOR_TARGET}×: {mark}).")
        else:
            lines.append(f"- vs **{c['peer']}** (min cosine {c['peer_min_cosine']:.4f}): c=32 throughput "
                         f"**{c['throughput_ratio_c32']:.2f}×** ({c['ours_fastest']}), c=1 p50 "
                         f"**{c['p50_ratio_c1']:.2f}×** ({c['ours_quickest']}) (target ≥ {PEER_THROUGHPUT_TARGET}× "
                         f"and ≤ {PEER_P50_TARGET}×: {mark}).")
    return lines


def section(data: dict, out: str) -> str:
    s = data["summary"]
    e = data["environment"]
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
        f"torch {e.get('torch')}; {_versions(e)}). "
        f"Every engine serves `{Path(data.get('source', data['model'])).name}`; one lean client, `/v1/embeddings`, "
        f"{data['rounds']} round{'s' if data['rounds'] != 1 else ''} of {data['block_s']:.0f}-second blocks per "
        "engine and level, engines "
        f"alternating (order rotated each round); medians of the blocks. Fidelity: min and mean cosine of each "
        f"engine's vectors to transformers' fp32 model with mean pooling, over the race's {data['sentences']} "
        "sentences.",
        "",
        table(data),
        "",
        *([_verdict(s["at_fidelity"], f"Best CPU path at fidelity ≥ {s['fidelity_bar']}", targets=True),
           _verdict(s["int8_vs_int8"], "int8 against int8", targets=False),
           _verdict(s["best_vs_best"], "Fastest against fastest, whatever the fidelity", targets=False)]
          if _has(data, "infinity") else []),
        *([_verdict(s.get("litserve_at_fidelity"), f"Against LitServe at fidelity ≥ {s['fidelity_bar']}",
                    targets=False)] if _has(data, "litserve") else []),
        *([_verdict(s.get("anchor_at_fidelity"), f"Against the in-process anchor at fidelity ≥ {s['fidelity_bar']}",
                    targets=False)] if _has(data, "st") else []),
        *(["", "Each peer engine against ours at equal or better fidelity (our fastest at c=32 and our quickest "
            "at c=1 among our engines at least as faithful, four decimals):", *_targets(s["per_engine"])]
          if s.get("per_engine") else []),
        "",
        _pareto(data),
        "",
        f"Other processes on this shared machine used up to {max(foreign) if foreign else 0:.2f} cores during a "
        f"block (median {sorted(foreign)[len(foreign) // 2] if foreign else 0:.2f}); the alternating blocks spread "
        f"that over every engine.{load_note} Raw blocks, per-request CPU and versions: `{out}/peers.json`; "
        f"plot: `{out}/peers.png`.",
    ]
    return "\n".join(lines)


def plot(data: dict, out: Path) -> None:
    """The Pareto view: c=32 throughput and c=1 p50 against min cosine to fp32, a point per engine, each
    frontier drawn through its servers; the in-process anchor hollow."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = data["results"]
    fronts = data.get("summary", {}).get("frontier") or summary(data)["frontier"]
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.2), dpi=110)
    for ax, (key, field, higher, label) in zip(axes, PARETO, strict=True):
        for r in rows:
            v, x = _level(r, key, field), _min_cos(r)
            if v is None or x != x:
                continue
            color = SERVERS.get(r["engine"]["server"], ("?", "tab:gray"))[1]
            ax.scatter([x], [v], s=36, zorder=3, edgecolors=color,
                       facecolors="none" if _in_process(r) else color)
            ax.annotate(r["name"], (x, v), textcoords="offset points", xytext=(4, 3), fontsize=6)
        on = [r for name in fronts.get(label, []) for r in rows if r["name"] == name]
        if on:
            pts = sorted((_min_cos(r), _level(r, key, field)) for r in on)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], "--", color="black", lw=0.8, zorder=2,
                    label="Pareto frontier (servers)")
            ax.legend(fontsize=7, loc="lower left" if higher else "upper left")
        ax.set_xlabel("fidelity: min cosine to transformers' fp32 (higher is better)", fontsize=8)
        ax.set_ylabel("c=32 inputs/s (higher is better)" if higher else "c=1 p50 latency, ms (lower is better)",
                      fontsize=8)
        ax.set_title(f"{label}: {'throughput' if higher else 'latency'} against fidelity", fontsize=9)
        ax.locator_params(axis="x", nbins=6)
        ax.margins(x=0.15, y=0.08)  # room for the names beside the points
        ax.grid(alpha=0.3)
    legend = ", ".join(f"{name}: {color.removeprefix('tab:')}" for server, (name, color) in SERVERS.items()
                       if any(r["engine"]["server"] == server for r in rows))
    hollow = "; hollow: in-process, not ranked" if any(_in_process(r) for r in rows) else ""
    fig.suptitle(f"Peer race on all-MiniLM-L6-v2, the Pareto view ({legend}{hollow})", fontsize=9)
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
