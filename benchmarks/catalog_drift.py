"""Every catalog variant's FP32/FP16/INT8 drift in one page: docs/catalog-drift.md.

Runs ``bbexport report --family F`` for each family (reusing the artifacts of earlier runs), then
folds the per-family ``report.json`` files into one table with a row per variant: what the FP16
and INT8 (cpu flavour) ONNX files cost in drift against FP32 PyTorch on the held-out photos, and
their sizes. Every INT8 miss then gets a sensitivity search (``--auto-exclude``). Hours on two
cores for the whole catalog: ``--families`` narrows it, ``--resume`` skips the families and
searches already done, ``--compile-only`` rewrites the page from what is there.

    .venv/bin/python benchmarks/catalog_drift.py --families mobilenetv3,ghostnet
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model_defs import get_spec, list_models  # noqa: E402
from model_defs.lenet import lenet5_checkpoint  # noqa: E402

SHIPPED_WEIGHTS = {"lenet5": lenet5_checkpoint()}  # variants measured on the checkpoint the repository ships
SHOWN_LAYERS = 12  # most sensitive first; the manifest of the searched model lists them all
HEADER = ("| Model | Params | GMACs | Input | FP16 cosine | INT8-cpu cosine | FP32 size | FP16 size | INT8 size "
          "| Budget |\n|---|---|---|---|---|---|---|---|---|---|")


def run_family(family: str, reports: Path, artifacts: Path, min_iters: int, threads: int | None) -> None:
    """One family's report: FP32/FP16/INT8 on PyTorch and ONNX Runtime."""
    subprocess.run([sys.executable, "-m", "exporter.cli", "report", "--family", family,
                    "--precisions", "fp32,fp16,int8", "--backends", "torch,ort", "--min-time", "0",
                    "--min-iters", str(min_iters), "--artifacts", str(artifacts), "--out", str(reports / family)]
                   + [f"--weights={model}={path}" for model, path in SHIPPED_WEIGHTS.items()
                      if get_spec(model).family == family]
                   + (["--threads", str(threads)] if threads else []), check=False)


def family_done(folder: Path) -> bool:
    """Whether a family's report is there and ran to its end (an interrupted one is redone)."""
    path = folder / "report.json"
    return path.is_file() and json.loads(path.read_text()).get("interrupted") is None


def load_reports(reports: Path) -> list[dict]:
    """Every report.json under ``reports`` (one per family, or per part of one), oldest first."""
    found = [json.loads(path.read_text()) for path in sorted(reports.glob("*/report.json"))]
    return sorted(found, key=lambda report: report["created"])


def int8_misses(reports: list[dict], families: list[str]) -> list[str]:
    """Variants whose INT8 (cpu flavour) row misses its budget in the reports."""
    return sorted({r["model"] for report in reports for r in report["rows"]
                   if r["family"] in families and r["precision"] == "int8" and r["backend"] == "ort"
                   and r["budget_pass"] is False})


def auto_exclude(model: str, targets: tuple[float, ...], artifacts: Path, timeout: float) -> dict:
    """``bbexport quantize MODEL --auto-exclude TARGET`` (cpu flavour) in its own artifacts folder:
    the layers the sensitivity search kept in float, and the cosine before and after. The search
    sees calibration samples only, so its target can hold there and still miss the budget on the
    held-out photos: then the next, stricter target is tried."""
    started = time.perf_counter()
    for target in targets:
        try:
            done = subprocess.run([sys.executable, "-m", "exporter.cli", "quantize", model, "--precision", "int8",
                                   "--flavour", "cpu", "--auto-exclude", str(target), "--out", str(artifacts)],
                                  capture_output=True, text=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            return {"error": f"target {target}: not finished within {timeout:.0f} s"}
        manifest = artifacts / model / f"{model}.int8-cpu.json"
        if done.returncode == 0 and manifest.is_file():  # quantize exits 1 when the photos miss the budget
            break
    else:
        return {"error": f"target {target}: " + (done.stderr.strip().splitlines() or ["failed"])[-1]}
    recorded = json.loads(manifest.read_text())
    found = recorded["details"]["auto_exclude"]
    return {"target": target, "cosine_before": found["before"], "cosine_after": found["after"],
            "photos_cosine": recorded["validation"]["drift"]["photos"]["cosine"], "excluded": found["excluded"],
            "probes": found.get("probes"), "seconds": round(time.perf_counter() - started, 1)}


MISSES_TITLE = "INT8 misses and the layers kept in float"


def misses_section(misses: list[str], results: dict[str, dict], kept: dict[str, str]) -> str:
    """The searches of every INT8 miss: run here (``results``), or kept from the previous page."""
    if not misses:
        return ""
    lines = [f"## {MISSES_TITLE}",
             "",
             "For each INT8 row above that misses the budget: `bbexport quantize MODEL --precision int8 --flavour cpu "
             "--auto-exclude TARGET` (same weights; the search measures on calibration samples, the cosine after "
             "it on the held-out photos; where the photos still missed the budget, the next target of 0.985, 0.99, "
             "0.995 was tried). The DPNs' searches ran after the probes began to drop the Q/DQ pairs no quantized "
             "node is left to make or read (f35344f); the others before, when the cpu flavour's logits, and any "
             "pair in front of a layer the spec keeps in float, stayed quantized in every probe: those searches "
             "may have kept more layers in float than they needed.",
             "",
             "| Model | Cosine before (calibration) | Target | Layers kept in float | Held-out cosine after | Probes | Time |",
             "|---|---|---|---|---|---|---|"]
    for model in misses:
        r = results.get(model)
        if r is None and model in kept:
            lines.append(kept[model])
            continue
        if r is None or "error" in r:
            why = "not searched yet" if r is None else f"search failed: {r['error']}"
            lines.append(f"| {model} | — | — | {why} | — | — | — |")
            continue
        shown = r["excluded"][:SHOWN_LAYERS]
        layers = ", ".join(f"`{name}`" for name in shown) + (
            f" and {len(r['excluded']) - len(shown)} more" if len(r["excluded"]) > len(shown) else "")
        lines.append(f"| {model} | {r['cosine_before']:.6f} | {r['target']} | {len(r['excluded'])}: {layers} | "
                     f"{r['photos_cosine']:.6f} | {r['probes']} | {r['seconds']:.0f} s |")
    return "\n".join(lines) + "\n"


CHANGES_TITLE = "INT8 rows that changed budget at their last measurement"


def changed_rows(table: list[str], kept: str) -> dict[str, str | None]:
    """model -> a change row, for each variant of ``table`` re-measured against its row in the previous
    page's section ``kept``: a row where the INT8-cpu budget verdict changed (the CPU that measured the
    old row named: INT8-cpu weights are 7-bit without VNNI, 8-bit with it), ``None`` where it did not."""
    made_by = _made_by_line(kept)
    before_on = made_by.split("; on ", 1)[1].split(";")[0].rstrip(".") if "; on " in made_by else "AMD EPYC"
    changes = {}
    for line in table:
        model = line.split(" | ")[0].lstrip("| ").strip()
        old = next((ln for ln in kept.splitlines() if ln.startswith(f"| {model} |")), "")
        if not old or old == line or "not measured yet" in old + line or "FAILED" in old + line:
            continue
        old_cells, new_cells = _cells(old), _cells(line)
        old_miss, new_miss = "int8" in old_cells[-1], "int8" in new_cells[-1]
        verdict = "newly out of budget" if new_miss else "newly within budget"
        changes[model] = (f"| {model} | {old_cells[5]} ({before_on}) | {new_cells[5]} | {verdict} |"
                          if old_miss != new_miss else None)
    return changes


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def changes_section(changes: dict[str, str | None]) -> str:
    """The variants whose INT8-cpu row crossed the budget when it was last re-measured."""
    if not any(changes.values()):
        return ""
    return "\n".join([f"## {CHANGES_TITLE}", "",
                      "Each variant whose INT8-cpu row crossed the budget when its family was last re-measured "
                      "(current defaults), against the row it replaced.", "",
                      "| Model | INT8-cpu cosine before (measured on) | After | |", "|---|---|---|---|",
                      *[changes[model] for model in sorted(changes) if changes[model]]]) + "\n"


def variant_rows(models: list[str], rows: list[dict], failures: list[dict], kept: str = "") -> list[str]:
    """A table row per variant: its FP16 and INT8-cpu drift on ONNX Runtime, its row in the ``kept``
    section of the previous page when this folder has no report of it, or why there is none."""
    by_model: dict[str, dict[str, dict]] = {}
    for row in rows:
        if row["backend"] == "ort" and row["batch"] == 1:
            label = row["precision"] + (f"-{row['flavour']}" if row["flavour"] else "")
            by_model.setdefault(row["model"], {})[label] = row
    failed = {f["model"]: f for f in failures}
    lines = []
    for model in models:
        rows_of = by_model.get(model)
        kept_line = next((line for line in kept.splitlines() if line.startswith(f"| {model} |")), "")
        if not rows_of and kept_line and "not measured yet" not in kept_line:
            lines.append(kept_line)
            continue
        if not rows_of:
            why = (f"FAILED at {failed[model]['stage']}: {failed[model]['error']}" if model in failed
                   else f"not measured yet: `bbexport report --models {model}`")
            lines.append(f"| {model} | {why} |" + " |" * 8)
            continue
        fp32, fp16, int8 = rows_of.get("fp32"), rows_of.get("fp16"), rows_of.get("int8-cpu")
        base = fp32 or fp16 or int8
        misses = [f"{label}: {r['budget_misses']}" for label, r in rows_of.items() if r["budget_pass"] is False]
        cells = [model, f"{base['params'] / 1e6:.2f}M", f"{base['gmacs']:.3f}", str(base["img_size"]),
                 _cosine(fp16), _cosine(int8), _size(fp32), _size(fp16), _size(int8),
                 "MISS " + "; ".join(misses) if misses else "pass"]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _made_by_line(section: str) -> str:
    """A kept section's "Made by" line: its report commands, weights and (since VNNI mattered) its CPU."""
    return next((line for line in section.splitlines() if line.startswith("Made by ")), "")


def _made_by(section: str) -> list[str]:
    """The report commands a kept section says it was made by."""
    return re.findall(r"`(bbexport report [^`]+)`", _made_by_line(section))


def _command(settings: dict) -> str:
    models = settings["models"]
    family = get_spec(models[0]).family
    chosen = f"--family {family}" if sorted(models) == sorted(list_models(family=family)) else \
        f"--models {','.join(models)}"
    return f"bbexport report {chosen}"


def _size(row: dict | None) -> str:
    return f"{row['artifact_bytes'] / 1e6:.1f} MB" if row and row["artifact_bytes"] else "—"


def _cosine(row: dict | None) -> str:
    return f"{row['cosine']:.6f}" if row and row["cosine"] is not None else "—"


def previous_sections(page: str) -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
    """The family sections (``## family`` to the next heading), the INT8-miss rows and the change rows
    (by model) of a page written before: what a compile keeps for families whose reports are not in
    this folder."""
    sections, misses, changes = {}, {}, {}
    for block in page.split("\n## ")[1:]:
        title = block.split("\n", 1)[0].strip()
        if title in (MISSES_TITLE, CHANGES_TITLE):
            rows = {line.split(" | ")[0].lstrip("| ").strip(): line for line in block.splitlines()
                    if line.startswith("| ") and not line.startswith(("| Model", "|---"))}
            (misses if title == MISSES_TITLE else changes).update(rows)
        else:
            sections[title] = "## " + block.rstrip() + "\n"
    return sections, misses, changes


def compile_page(reports: list[dict], families: list[str], excluded: dict[str, dict], previous: str = "") -> str:
    # A later report of a variant replaces an earlier one.
    latest = {(r["model"], r["precision"], r["flavour"], r["backend"], r["batch"]): r
              for report in reports for r in report["rows"]}
    failures = [f for report in reports for f in report["failures"]]
    kept, kept_misses, kept_changes = previous_sections(previous)
    sections, changes = [], dict(kept_changes)
    for family in families:
        models = list_models(family=family)
        rows = [r for r in latest.values() if r["family"] == family]
        if not rows and family in kept:  # measured before, by reports not in this folder
            sections.append(kept[family])
            continue
        weights = sorted({r["weights"] for r in rows}) or ["—"]
        made_in = [report for report in reports if any(r["family"] == family for r in report["rows"])]
        made_by = [_command(report["settings"]) for report in made_in] or [f"bbexport report --family {family}"]
        made_by += [command for command in _made_by(kept.get(family, "")) if command not in made_by]
        # INT8-cpu weights are 7-bit on x86 CPUs without VNNI, 8-bit with it: say which CPU measured the section
        cpus = sorted({report["machine"]["cpu"] for report in made_in})
        kept_elsewhere = family in kept and {r["model"] for r in rows} < set(list_models(family=family))
        if kept_elsewhere and "; on " not in _made_by_line(kept[family]):  # no CPU named: the AMD EPYC runs
            cpus.append("the earlier rows on an AMD EPYC without VNNI")
        dates = sorted({report["created"][:10] for report in made_in})
        made_by_line = (f"Made by {', '.join(f'`{c}`' for c in made_by)}; weights: {', '.join(weights)}"
                        + (f"; on {', '.join(cpus)}" if cpus else "") + (f"; measured {', '.join(dates)}" if dates else ""))
        table = variant_rows(models, rows, failures, kept.get(family, ""))
        changes.update(changed_rows(table, kept.get(family, "")))
        sections.append(f"## {family}\n\n{made_by_line}.\n\n{HEADER}\n" + "\n".join(table) + "\n")
    old_rows = kept_rows(kept, families, latest)
    measured = {r["model"] for r in latest.values() if r["backend"] == "ort"}
    measured |= {m for m, line in old_rows.items() if "not measured yet" not in line}
    missing = [m for family in families for m in list_models(family=family) if m not in measured]
    fp16_misses = sorted({r["model"] for r in latest.values() if r["precision"] == "fp16" and r["budget_pass"] is False}
                         | {m for m, line in old_rows.items() if "fp16:" in line.rsplit("|", 2)[-2]})
    int8_missed = sorted(set(int8_misses(reports, families))
                         | {m for m, line in old_rows.items() if "int8" in line.rsplit("|", 2)[-2]})
    summary = (f"**{len(measured)} variants measured**: FP16 within budget for "
               f"{len(measured) - len(fp16_misses)}" + (f" (misses: {', '.join(fp16_misses)})" if fp16_misses else "")
               + f", INT8-cpu for {len(measured) - len(int8_missed)}; {len(int8_missed)} INT8 misses, with the "
               "sensitivity search at the end. "
               + (f"Not measured yet: {', '.join(missing)}." if missing else "Every registered variant is measured."))
    machine = reports[-1]["machine"] if reports else None
    # the held-out set most sections were measured on: the photos (LeNet-5's digits are its own section's)
    settings = next((r["settings"] for r in reversed(reports) if not r["settings"]["evaluation_photos"][0]
                     .startswith("digit-")), reports[-1]["settings"]) if reports else None
    intro = ["# Catalog drift: every variant, FP32 / FP16 / INT8",
             "",
             "Made by `benchmarks/catalog_drift.py` (`make catalog`) from `bbexport report … --precisions "
             "fp32,fp16,int8 --backends torch,ort --min-time 0 --min-iters 3` runs (each section names its "
             "own), at each variant's default input size. Drift is cosine similarity of the logits to FP32 PyTorch on the "
             "10 held-out photos; INT8 is the cpu flavour with default options (entropy calibration on the "
             "disjoint calibration photos; 7-bit weights on an x86 CPU without VNNI, 8-bit with it: each section "
             "names its CPU, the sections without one were measured on an AMD EPYC without VNNI; the variant's own "
             "`int8_keep_float` and `int8_keep_float_cpu` layers only (the EfficientNet-Lites' rows were re-measured "
             "when their stem joined the latter); empirical bias correction, the default since issue 19 (README, Drift), is "
             "in the sections that say when they were measured (the re-baseline with the current defaults, run in parts: "
             "`--resume` goes on with the families not measured yet) and in the EfficientNet-Lites' rows; the others were "
             "measured before it. On random weights it costs a little: the section at the end lists the rows it took "
             "across the budget. The family reports also time every row; those runs shared the "
             "two cores with other jobs, so latencies are left to `make bench`, which measures side by side.",
             "",
             "> Weights are random and BN-recalibrated unless a row says otherwise: every figure here is a "
             "smoke test of the export and quantization path, not an accuracy claim. Residual branches whose "
             "last norm is zero-initialised (ResNet, MBConv families) contribute nothing on such weights, "
             "and the simplifier stores their identical all-zero folded weights once, so those files are "
             "smaller than their parameter counts imply (ResNeXt-50: 17.7M of 25.0M stored).",
             ""]
    intro += [summary, ""]
    if machine:
        intro += [f"- Machine: {machine['cpu']}, {machine['usable_cores']} cores, GPU: {machine['gpu'] or 'none'}",
                  "- Libraries: " + ", ".join(f"{k} {v}" for k, v in machine["versions"].items()),
                  f"- Budget: FP16 cosine ≥ 0.999, INT8 cosine ≥ 0.98 (`exporter/drift_budget.csv`); "
                  f"held-out photos: {', '.join(settings['evaluation_photos'])}", ""]
    else:  # nothing measured here: the machine the kept sections were measured on
        intro += [line for line in previous.splitlines() if line.startswith(("- Machine:", "- Libraries:", "- Budget:"))]
        intro += [""] if previous else []
    return ("\n".join(intro) + "\n" + "\n".join(sections) + "\n" + misses_section(int8_missed, excluded, kept_misses)
            + changes_section(changes))


def kept_rows(kept: dict[str, str], families: list[str], latest: dict) -> dict[str, str]:
    """model -> its table line in the previous page, for the variants this folder has no report of."""
    fresh = {r["model"] for r in latest.values()}
    rows = {}
    for family in families:
        for model in list_models(family=family):
            line = next((ln for ln in kept.get(family, "").splitlines() if ln.startswith(f"| {model} |")), None)
            if line and model not in fresh:
                rows[model] = line
    return rows


def main() -> int:
    families_all = sorted({get_spec(name).family for name in list_models()})
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", default=",".join(families_all))
    parser.add_argument("--reports", type=Path, default=Path("reports/catalog"))
    parser.add_argument("--artifacts", type=Path, default=Path("artifacts"))
    parser.add_argument("--min-iters", type=int, default=3)
    parser.add_argument("--threads", type=int, help="intra-op threads of each report (default: the report's)")
    parser.add_argument("--auto-exclude", default="0.985,0.99,0.995", metavar="COS[,COS…]",
                        help="targets of the sensitivity search run on every INT8 miss, tried in turn until "
                             "the held-out photos meet the budget")
    parser.add_argument("--search-timeout", type=float, default=900, help="seconds per sensitivity search")
    parser.add_argument("--resume", action="store_true", help="skip families and searches already done")
    parser.add_argument("--compile-only", action="store_true", help="rewrite the page from existing reports")
    parser.add_argument("--out", type=Path, default=Path("docs/catalog-drift.md"))
    args = parser.parse_args()
    families = [f for f in args.families.split(",") if f]
    targets = tuple(float(t) for t in args.auto_exclude.split(","))
    unknown = sorted(set(families) - set(families_all))
    if unknown:
        parser.error(f"unknown families: {', '.join(unknown)}")
    pending = [] if args.compile_only else [f for f in families if not (args.resume and family_done(args.reports / f))]
    for family in pending:
        run_family(family, args.reports, args.artifacts, args.min_iters, args.threads)
    searches = args.reports / "auto-exclude.json"
    excluded = json.loads(searches.read_text()) if searches.is_file() else {}
    if not args.compile_only:
        for model in int8_misses(load_reports(args.reports), families):
            if args.resume and model in excluded:
                continue
            excluded[model] = auto_exclude(model, targets, args.artifacts / "auto-exclude",
                                           args.search_timeout)
            searches.write_text(json.dumps(excluded, indent=1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    previous = args.out.read_text() if args.out.is_file() else ""
    args.out.write_text(compile_page(load_reports(args.reports), families_all, excluded, previous))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
