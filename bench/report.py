"""Benchmark report: JSON, a Markdown table, three PNG plots, and the README's
"Teacher vs student" section, all generated from one run's results."""

from __future__ import annotations

import json
from pathlib import Path

from lab.readme import markers, write_section

from .profiles import BOUNDS

__all__ = ["markers", "write_all", "write_section"]  # the writer's old home: importers keep working


def _find(data: dict, model: str, endpoint: str, profile: str, c: int) -> dict | None:
    for r in data["results"]:
        lv = r["level"]
        if (lv["model"], lv["endpoint"], lv["profile"], lv["mode"], lv["concurrency"]) == (model, endpoint, profile,
                                                                                            "closed", c):
            return r
    return None


def _inproc(data: dict, model: str, profile: str, c: int) -> dict | None:
    return next((r for r in data["inprocess"] if (r["model"], r["profile"], r["concurrency"]) == (model, profile, c)),
                None)


def roles(data: dict) -> dict[str, str]:
    """{role: model name} of the classifiers the sweep measured: a served configuration has a teacher and a
    student per task (serve.json's embedders share the roles), and /classify is what the sweep is about."""
    measured = {x["level"]["model"] for x in data["results"] if x["level"]["endpoint"] == "/classify"}
    models = data["environment"].get("service", {}).get("models", [])
    return {m["role"]: m["name"] for m in models if m["role"] in ("teacher", "student") and m["name"] in measured}


def summary(data: dict) -> dict:
    """The numbers the targets are about: /classify, single short sentences."""
    r = roles(data)
    out: dict = {"per_model": {}}
    concs = sorted({x["level"]["concurrency"] for x in data["results"] if x["level"]["mode"] == "closed"})
    hi = max(concs) if concs else 1
    out["high_concurrency"] = hi
    for role, name in r.items():
        c1, chi = _find(data, name, "/classify", "short", 1), _find(data, name, "/classify", "short", hi)
        i1, ihi = _inproc(data, name, "short", 1), _inproc(data, name, "short", hi)
        d = {}
        if c1:
            d["p50_c1_ms"] = c1["latency_ms"]["p50"]
        if chi:
            d["inputs_per_s_chi"] = chi["inputs_per_s"]
        pair = next((x for x in data.get("paired", []) if x["model"] == name), None)
        if pair:  # alternating blocks: both halves saw the same machine
            d["raw_c1_ms"] = pair["inprocess_p50_ms"]
            d["overhead_c1_ms"] = pair["overhead_ms"]
        elif c1 and i1:
            d["raw_c1_ms"] = i1["batch_p50_ms"]
            d["overhead_c1_ms"] = c1["latency_ms"]["p50"] - i1["batch_p50_ms"]
        if chi and ihi:
            d["raw_inputs_per_s_chi"] = ihi["inputs_per_s"]
            d["service_over_raw_chi"] = chi["inputs_per_s"] / ihi["inputs_per_s"]
        d["padding_ratio"] = data.get("padding_ratio", {}).get(name)
        d["cpu_chi"] = (chi or {}).get("extra", {}).get("cpu")
        out["per_model"][role] = d
    t, s = out["per_model"].get("teacher", {}), out["per_model"].get("student", {})
    if "p50_c1_ms" in t and "p50_c1_ms" in s:
        out["student_over_teacher_p50_c1"] = s["p50_c1_ms"] / t["p50_c1_ms"]
    if "inputs_per_s_chi" in t and "inputs_per_s_chi" in s:
        out["student_over_teacher_throughput_chi"] = s["inputs_per_s_chi"] / t["inputs_per_s_chi"]
    return out


def markdown_table(data: dict) -> str:
    lines = ["| model | endpoint | profile | load | req/s | inputs/s | tokens/s | p50 | p90 | p95 | p99 | max "
             "| server queue / tok / infer (ms) | CPU per request: load generator / event loop / model threads (ms) "
             "| errors |",
             "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---|"]
    for r in data["results"]:
        lv, lat, sv = r["level"], r["latency_ms"], r["server_ms"]
        load = f"c={lv['concurrency']}" if lv["mode"] == "closed" else f"{lv['rate']:.1f} req/s open"
        errs = ", ".join(f"{k}: {v}" for k, v in r["errors"].items()) or "0"
        lines.append(f"| {lv['model']} | {lv['endpoint']} | {lv['profile']} | {load} | {r['requests_per_s']:.1f} "
                     f"| {r['inputs_per_s']:.1f} | {r['tokens_per_s']:.0f} | {lat['p50']:.1f} | {lat['p90']:.1f} "
                     f"| {lat['p95']:.1f} | {lat['p99']:.1f} | {lat['max']:.1f} "
                     f"| {sv['queue_ms']:.1f} / {sv['tokenization_ms']:.1f} / {sv['inference_ms']:.1f} "
                     f"| {_cpu(r.get('extra', {}).get('cpu'))} | {errs} |")
    lines += ["", "In-process (same models and inputs, no HTTP, no batching engine; measured before and after the "
              "load, the faster run kept):", "",
              "| model | profile | batch | batch p50 (ms) | inputs/s |", "|---|---|---:|---:|---:|"]
    for r in data["inprocess"]:
        lines.append(f"| {r['model']} | {r['profile']} | {r['concurrency']} | {r['batch_p50_ms']:.1f} "
                     f"| {r['inputs_per_s']:.1f} |")
    return "\n".join(lines)


def _cpu(c: dict | None) -> str:
    if not c:
        return "–"
    return f"{c['client_ms']:.2f} / {c['server_loop_ms']:.2f} / {c['server_other_ms']:.2f}"


def _fmt(x: float | None, f: str = ".2f") -> str:
    return "–" if x is None else format(x, f)


def _models_line(data: dict) -> str:
    models = data["environment"].get("service", {}).get("models", [])
    parts = [f"{m['role']} `{m['name']}` ({m['family']}, {m['layers']} layers × {m['hidden_size']}, "
             f"{m['parameters'] / 1e6:.1f}M parameters)" for m in models if m["role"] in ("teacher", "student")]
    return "Models: " + "; ".join(parts) + "." if parts else ""


def teacher_vs_student(data: dict, accuracy: dict | None, out: str = "bench/results",
                       command: str = "make bench") -> str:
    s = summary(data)
    e = data["environment"]
    hi = s["high_concurrency"]
    machine = f"{e['cpu']}, {e['cores']} cores, {e['torch_threads']} torch threads"
    if e.get("gpu"):
        machine += f", GPU {e['gpu']}"
    pm = s["per_model"]
    lines = [f"Measured by `{command}` on {data['created']}: {machine}; torch {e['torch']}; "
             f"texts: {data['texts']}. Single-sentence `/classify` requests through HTTP. {_models_line(data)}", "",
             "| | teacher | student | student / teacher |", "|---|---:|---:|---:|"]

    def row(label: str, key: str, f: str = ".1f", ratio: str | None = None) -> None:
        t, st = pm.get("teacher", {}).get(key), pm.get("student", {}).get(key)
        r = s.get(ratio) if ratio else (st / t if t and st else None)
        lines.append(f"| {label} | {_fmt(t, f)} | {_fmt(st, f)} | {_fmt(r, '.2f')} |")

    row("p50 latency at concurrency 1 (ms)", "p50_c1_ms", ratio="student_over_teacher_p50_c1")
    row(f"throughput at concurrency {hi} (inputs/s)", "inputs_per_s_chi", ratio="student_over_teacher_throughput_chi")
    row("raw tokenize + forward at batch 1, in-process (ms)", "raw_c1_ms")
    row("service overhead at concurrency 1 (ms, HTTP p50 − in-process p50, alternating blocks)", "overhead_c1_ms")
    row(f"service / in-process throughput at concurrency {hi}", "service_over_raw_chi", ".2f")
    row("padded / real tokens over the run", "padding_ratio", ".3f")
    tc, sc = pm.get("teacher", {}).get("cpu_chi"), pm.get("student", {}).get("cpu_chi")
    if tc or sc:
        lines.append(f"| CPU per request at concurrency {hi} (ms): load generator / event loop / model threads "
                     f"| {_cpu(tc)} | {_cpu(sc)} | |")
        busy = [f"{c['cores_busy']:.2f}" if c else "–" for c in (tc, sc)]
        lines.append(f"| cores busy at concurrency {hi} (of {e['cores']}) | {busy[0]} | {busy[1]} | |")
    if accuracy:
        lines += accuracy_rows(accuracy["models"])
    if command == "make bench" and (targets := lean_targets(pm.get("student", {}), hi)) is not None:
        lines += ["", targets]
    if (long_line := long_inputs(data)) is not None:
        lines += ["", long_line]
    lines += ["", f"![latency vs load]({out}/latency.png) ![throughput]({out}/throughput.png) "
              f"![speed-up]({out}/speedup.png)", "",
              f"Every level, the server-side split and the in-process numbers: `{out}/bench.md`."]
    return "\n".join(lines)


# The request path's targets, on the served student (single short sentences).
LOOP_MS_TARGET, SERVICE_OVER_RAW_TARGET, OVERHEAD_C1_TARGET = 0.12, 0.85, 0.5


def lean_targets(st: dict, hi: int) -> str | None:
    """The lean-path targets against this run's student numbers, met or not."""
    cpu = st.get("cpu_chi")
    if not cpu or st.get("service_over_raw_chi") is None or st.get("overhead_c1_ms") is None:
        return None

    def mark(ok: bool) -> str:
        return "✅" if ok else "❌"

    loop, ratio, over = cpu["server_loop_ms"], st["service_over_raw_chi"], st["overhead_c1_ms"]
    return (f"Targets for the student's request path: event-loop CPU per request at concurrency {hi} "
            f"{loop:.2f} ms (≤ {LOOP_MS_TARGET}: {mark(round(loop, 2) <= LOOP_MS_TARGET)}); service / in-process "
            f"throughput {ratio:.2f} (≥ {SERVICE_OVER_RAW_TARGET}: {mark(ratio >= SERVICE_OVER_RAW_TARGET)}); "
            f"service overhead at concurrency 1 {over:.1f} ms (≤ {OVERHEAD_C1_TARGET}: "
            f"{mark(over <= OVERHEAD_C1_TARGET)}).")


# What the bench section shows of make models' results.json, per role (the teacher has no retention).
ACCURACY_FIELDS = ("accuracy", "retention", "accuracy_ood_mean", "retention_ood_mean", "parameters")


def accuracy_rows(m: dict) -> list[str]:
    """Table rows from make models' results (``models``: teacher and student): test accuracy in-domain and,
    where measured, out of domain, each with the student's retention; the parameter counts."""
    t, s = m["teacher"], m["student"]
    rows = [f"| test accuracy, movie-review sentiment (`make models`) | {100 * t['accuracy']:.2f}% "
            f"| {100 * s['accuracy']:.2f}% | {s.get('retention', s['accuracy'] / t['accuracy']):.3f} |"]
    if "accuracy_ood_mean" in t and "accuracy_ood_mean" in s:
        rows.append(f"| test accuracy, out-of-domain mean (tweets, NYT editorials) "
                    f"| {100 * t['accuracy_ood_mean']:.2f}% | {100 * s['accuracy_ood_mean']:.2f}% "
                    f"| {s.get('retention_ood_mean', s['accuracy_ood_mean'] / t['accuracy_ood_mean']):.3f} |")
    tp, sp = t["parameters"], s["parameters"]
    rows.append(f"| parameters | {tp / 1e6:.1f}M | {sp / 1e6:.1f}M | {sp / tp:.2f} |")
    return rows


def long_inputs(data: dict) -> str | None:
    """The long-input finding, in words, from this run's numbers (it was once typed by hand and
    then contradicted by the next run)."""
    r = roles(data)
    if "teacher" not in r or "student" not in r:
        return None
    pairs = []
    for c in sorted({x["level"]["concurrency"] for x in data["results"] if x["level"]["mode"] == "closed"}):
        t, s = _find(data, r["teacher"], "/classify", "long", c), _find(data, r["student"], "/classify", "long", c)
        if t and s and t["inputs_per_s"]:
            pairs.append((c, s["inputs_per_s"], t["inputs_per_s"]))
    if not pairs:
        return None
    ratios = [s / t for _, s, t in pairs]
    lo, hi = min(ratios), max(ratios)
    span = f"{lo:.2f}×" if f"{lo:.2f}" == f"{hi:.2f}" else f"{lo:.2f}–{hi:.2f}×"
    each = "; ".join(f"{s:.1f} vs {t:.1f} inputs/s at concurrency {c}" for c, s, t in pairs)
    lo_tok, hi_tok = BOUNDS["long"]
    return (f"Long inputs ({lo_tok}–{hi_tok} tokens), where the model dominates: the student's throughput is "
            f"{span} the teacher's across concurrency {pairs[0][0]}–{pairs[-1][0]} ({each}).")


def plots(data: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    r = roles(data)
    colors = {"teacher": "tab:blue", "student": "tab:orange"}

    def save(fig, ax, path: Path, xlabel: str, ylabel: str, title: str) -> None:
        """The part every chart shares: log-2 load axis, labels, grid, legend, PNG."""
        ax.set_xscale("log", base=2)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.grid(alpha=0.3)  # major lines; the latency chart adds its minor ones itself
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(path)
        plt.close(fig)

    def series(name: str, profile: str = "short"):
        pts = sorted((x["level"]["concurrency"], x) for x in data["results"]
                     if x["level"]["model"] == name and x["level"]["endpoint"] == "/classify"
                     and x["level"]["profile"] == profile and x["level"]["mode"] == "closed")
        return [c for c, _ in pts], [x for _, x in pts]

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=110)
    for role, name in r.items():
        cs, xs = series(name)
        for q, style in (("p50", "-"), ("p95", "--"), ("p99", ":")):
            ax.plot(cs, [x["latency_ms"][q] for x in xs], style, marker="o", color=colors[role], label=f"{role} {q}")
    ax.set_yscale("log")
    ax.grid(alpha=0.3, which="both")
    save(fig, ax, out / "latency.png", "concurrent clients", "latency (ms)",
         "/classify latency vs load (single sentences)")

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=110)
    for role, name in r.items():
        cs, xs = series(name)
        ax.plot(cs, [x["inputs_per_s"] for x in xs], marker="o", color=colors[role], label=f"{role} via HTTP")
        raw = [(c, _inproc(data, name, "short", c)) for c in cs]
        ax.plot([c for c, v in raw if v], [v["inputs_per_s"] for _, v in raw if v], "--", color=colors[role],
                alpha=0.6, label=f"{role} in-process")
    save(fig, ax, out / "throughput.png", "concurrent clients (in-process: batch size)", "inputs / s",
         "/classify throughput vs concurrency")

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=110)
    if "teacher" in r and "student" in r:
        for profile, style in (("short", "-"), ("mixed", "--"), ("long", ":")):
            ct, xt = series(r["teacher"], profile)
            cs_, xs_ = series(r["student"], profile)
            common = sorted(set(ct) & set(cs_))
            if not common:
                continue
            t_by, s_by = dict(zip(ct, xt, strict=True)), dict(zip(cs_, xs_, strict=True))
            ax.plot(common, [s_by[c]["inputs_per_s"] / t_by[c]["inputs_per_s"] for c in common], style, marker="o",
                    color="tab:green", label=f"throughput ratio ({profile})")
            ax.plot(common, [t_by[c]["latency_ms"]["p50"] / s_by[c]["latency_ms"]["p50"] for c in common], style,
                    marker="s", color="tab:purple", label=f"p50 latency ratio ({profile})")
    ax.axhline(1.8, color="gray", lw=0.8, ls="--")
    save(fig, ax, out / "speedup.png", "concurrent clients", "student speed-up over teacher (×)",
         "Student speed-up vs load")


def write_all(data: dict, out: Path, readme: Path | None = None, accuracy: Path | None = None,
              section_name: str = "bench", command: str = "make bench") -> None:
    """Write bench.json, bench.md and the plots into ``out``; with ``readme``, replace the text
    between its ``<!-- {section_name}:start/end -->`` markers."""
    out.mkdir(parents=True, exist_ok=True)
    data["summary"] = summary(data)
    # The accuracy the section shows is kept with the run, so `bench report` rewrites the same
    # section later without artifacts/ (which is not in the repository).
    if accuracy and accuracy.is_file():
        models = json.loads(accuracy.read_text())["models"]
        data["accuracy"] = {"models": {role: {k: models[role][k] for k in ACCURACY_FIELDS if k in models[role]}
                                       for role in ("teacher", "student") if role in models}}
    acc = data.get("accuracy")
    (out / "bench.json").write_text(json.dumps(data, indent=2) + "\n")
    try:
        shown = out.resolve().relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        shown = str(out)
    section = teacher_vs_student(data, acc, shown, command)
    (out / "bench.md").write_text("# Benchmark\n\n" + section + "\n\n## Every level\n\n" + markdown_table(data) + "\n")
    plots(data, out)
    if readme is not None:
        write_section(readme, section_name, section)
    print(section)
