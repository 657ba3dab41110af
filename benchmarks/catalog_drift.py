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
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model_defs import get_spec, list_models  # noqa: E402

HEADER = ("| Model | Params | GMACs | Input | FP16 cosine | INT8-cpu cosine | FP32 size | FP16 size | INT8 size "
          "| Budget |\n|---|---|---|---|---|---|---|---|---|---|")


def run_family(family: str, reports: Path, artifacts: Path, min_iters: int) -> float:
    """One family's report (FP32/FP16/INT8 on PyTorch and ONNX Runtime); its wall time in seconds."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "exporter.cli", "report", "--family", family,
                    "--precisions", "fp32,fp16,int8", "--backends", "torch,ort", "--min-time", "0",
                    "--min-iters", str(min_iters), "--artifacts", str(artifacts), "--out", str(reports / family)],
                   check=False)
    return time.perf_counter() - started


def int8_misses(reports: Path, families: list[str]) -> list[str]:
    """Variants whose INT8 (cpu flavour) row misses its budget in the family reports."""
    misses = []
    for family in families:
        path = reports / family / "report.json"
        if path.is_file():
            misses += [r["model"] for r in json.loads(path.read_text())["rows"]
                       if r["precision"] == "int8" and r["backend"] == "ort" and r["budget_pass"] is False]
    return misses


def auto_exclude(model: str, target: float, artifacts: Path, timeout: float) -> dict:
    """``bbexport quantize MODEL --auto-exclude TARGET`` (cpu flavour) in its own artifacts folder:
    the layers the sensitivity search kept in float, and the cosine before and after."""
    started = time.perf_counter()
    try:
        done = subprocess.run([sys.executable, "-m", "exporter.cli", "quantize", model, "--precision", "int8",
                               "--flavour", "cpu", "--auto-exclude", str(target), "--out", str(artifacts)],
                              capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return {"error": f"not finished within {timeout:.0f} s"}
    manifest = artifacts / model / f"{model}.int8-cpu.json"
    if done.returncode != 0 or not manifest.is_file():
        return {"error": (done.stderr.strip().splitlines() or ["failed"])[-1]}
    recorded = json.loads(manifest.read_text())
    found = recorded["details"]["auto_exclude"]
    return {"target": target, "cosine_before": found["cosine_before"], "cosine_after": found["cosine_after"],
            "photos_cosine": recorded["validation"]["drift"]["photos"]["cosine"], "excluded": found["excluded"],
            "probes": found.get("probes"), "seconds": round(time.perf_counter() - started, 1)}


def misses_section(results: dict[str, dict]) -> str:
    if not results:
        return ""
    lines = ["## INT8 misses and the layers kept in float",
             "",
             "For each INT8 row above that misses the budget: `bbexport quantize MODEL --precision int8 --flavour cpu "
             "--auto-exclude TARGET` (same weights; the search measures on calibration samples, the cosine after "
             "it on the held-out photos).",
             "",
             "| Model | Cosine before (calibration) | Layers kept in float | Held-out cosine after | Probes | Time |",
             "|---|---|---|---|---|---|"]
    for model, r in sorted(results.items()):
        if "error" in r:
            lines.append(f"| {model} | — | search failed: {r['error']} | — | — | — |")
            continue
        layers = ", ".join(f"`{name}`" for name in r["excluded"])
        lines.append(f"| {model} | {r['cosine_before']:.6f} | {len(r['excluded'])}: {layers} | "
                     f"{r['photos_cosine']:.6f} | {r['probes']} | {r['seconds']:.0f} s |")
    return "\n".join(lines) + "\n"


def variant_rows(report: dict) -> list[str]:
    """A table row per variant from one family's report.json."""
    by_model: dict[str, dict[str, dict]] = {}
    for row in report["rows"]:
        if row["backend"] == "ort" and row["batch"] == 1:
            label = row["precision"] + (f"-{row['flavour']}" if row["flavour"] else "")
            by_model.setdefault(row["model"], {})[label] = row
    lines = []
    for model, rows in by_model.items():
        fp32, fp16, int8 = rows.get("fp32"), rows.get("fp16"), rows.get("int8-cpu")
        base = fp32 or fp16 or int8
        misses = [f"{label}: {r['budget_misses']}" for label, r in rows.items() if r["budget_pass"] is False]
        cells = [model, f"{base['params'] / 1e6:.2f}M", f"{base['gmacs']:.3f}", str(base["img_size"]),
                 _cosine(fp16), _cosine(int8), _size(fp32), _size(fp16), _size(int8),
                 "MISS " + "; ".join(misses) if misses else "pass"]
        lines.append("| " + " | ".join(cells) + " |")
    for failure in report["failures"]:
        lines.append(f"| {failure['model']} | FAILED at {failure['stage']}: {failure['error']} |" + " |" * 8)
    return lines


def _size(row: dict | None) -> str:
    return f"{row['artifact_bytes'] / 1e6:.1f} MB" if row and row["artifact_bytes"] else "—"


def _cosine(row: dict | None) -> str:
    return f"{row['cosine']:.6f}" if row and row["cosine"] is not None else "—"


def compile_page(reports: Path, families: list[str], times: dict[str, float], excluded: dict[str, dict]) -> str:
    sections, machine, settings = [], None, None
    for family in families:
        path = reports / family / "report.json"
        if not path.is_file():
            sections.append(f"## {family}\n\nNo report yet: `benchmarks/catalog_drift.py --families {family}`.\n")
            continue
        report = json.loads(path.read_text())
        machine, settings = machine or report["machine"], settings or report["settings"]
        weights = sorted({r["weights"] for r in report["rows"]})
        took = f" ({times[family] / 60:.1f} min)" if family in times else ""
        sections.append(f"## {family}\n\n`bbexport report --family {family}`{took}; weights: "
                        f"{', '.join(weights)}.\n\n{HEADER}\n" + "\n".join(variant_rows(report)) + "\n")
    intro = ["# Catalog drift: every variant, FP32 / FP16 / INT8",
             "",
             "Made by `benchmarks/catalog_drift.py` (`make catalog`): `bbexport report --family F --precisions "
             "fp32,fp16,int8 --backends torch,ort --min-time 0 --min-iters 3` for every family, at each "
             "variant's default input size. Drift is cosine similarity of the logits to FP32 PyTorch on the "
             "10 held-out photos; INT8 is the cpu flavour with default options (entropy calibration on the "
             "disjoint calibration photos, 7-bit weights on this VNNI-less CPU, the variant's own "
             "`int8_keep_float` layers only). The family reports also time every row; those runs shared the "
             "two cores with other jobs, so latencies are left to `make bench`, which measures side by side.",
             "",
             "> Weights are random and BN-recalibrated unless a row says otherwise: every figure here is a "
             "smoke test of the export and quantization path, not an accuracy claim. Residual branches whose "
             "last norm is zero-initialised (ResNet, MBConv families) contribute nothing on such weights.",
             ""]
    if machine:
        intro += [f"- Machine: {machine['cpu']}, {machine['usable_cores']} cores, GPU: {machine['gpu'] or 'none'}",
                  "- Libraries: " + ", ".join(f"{k} {v}" for k, v in machine["versions"].items()),
                  f"- Budget: FP16 cosine ≥ 0.999, INT8 cosine ≥ 0.98 (`exporter/drift_budget.csv`); "
                  f"held-out photos: {', '.join(settings['evaluation_photos'])}", ""]
    return "\n".join(intro) + "\n" + "\n".join(sections) + "\n" + misses_section(excluded)


def main() -> int:
    families_all = sorted({get_spec(name).family for name in list_models()})
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", default=",".join(families_all))
    parser.add_argument("--reports", type=Path, default=Path("reports/catalog"))
    parser.add_argument("--artifacts", type=Path, default=Path("artifacts"))
    parser.add_argument("--min-iters", type=int, default=3)
    parser.add_argument("--auto-exclude", type=float, default=0.985, metavar="COS",
                        help="target of the sensitivity search run on every INT8 miss")
    parser.add_argument("--search-timeout", type=float, default=900, help="seconds per sensitivity search")
    parser.add_argument("--resume", action="store_true", help="skip families and searches already done")
    parser.add_argument("--compile-only", action="store_true", help="rewrite the page from existing reports")
    parser.add_argument("--out", type=Path, default=Path("docs/catalog-drift.md"))
    args = parser.parse_args()
    families = [f for f in args.families.split(",") if f]
    unknown = sorted(set(families) - set(families_all))
    if unknown:
        parser.error(f"unknown families: {', '.join(unknown)}")
    pending = [] if args.compile_only else [
        f for f in families if not (args.resume and (args.reports / f / "report.json").is_file())]
    times = {f: run_family(f, args.reports, args.artifacts, args.min_iters) for f in pending}
    searches = args.reports / "auto-exclude.json"
    excluded = json.loads(searches.read_text()) if searches.is_file() else {}
    if not args.compile_only:
        for model in int8_misses(args.reports, families):
            if args.resume and model in excluded:
                continue
            excluded[model] = auto_exclude(model, args.auto_exclude, args.artifacts / "auto-exclude",
                                           args.search_timeout)
            searches.write_text(json.dumps(excluded, indent=1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(compile_page(args.reports, families_all, times, excluded))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
