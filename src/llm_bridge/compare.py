"""Stage `compare`: one report for all variants of an experiment (docs/experiments.md), as a standalone HTML
file (curves inlined as SVG) that the Snakemake report also shows.

A table of every setting that differs between the variants, the final SFT loss, the final PPO reward, the
evaluation accuracy of each variant's final model with a 95 % Wilson interval, and the SFT and PPO wall time;
overlaid SFT loss and PPO reward curves; the best variant (highest accuracy, then reward, then SFT loss) marked.

    python -m llm_bridge.compare --experiment lr-sweep --variants '<json>' --out runs/lr-sweep/compare/report.html
    <json>: {"<run>": {"config": {...}, "sft": "<sft/result.json>", "ppo": "<ppo/result.json>" | null,
                              "eval": "<evaluate/eval.json>", "benchmarks": {"sft": "<tsv>", "ppo": "<tsv>"}}}
"""
from __future__ import annotations

import argparse
import csv
import html
import io
import json
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on cluster nodes
matplotlib.rcParams["svg.fonttype"] = "none"  # text stays text in the inlined SVG (searchable, smaller)
import matplotlib.pyplot as plt  # noqa: E402

from llm_bridge import atomic  # noqa: E402
from llm_bridge.experiments import dotted_keys  # noqa: E402
from llm_bridge.plots import series  # noqa: E402

REWARD = "critic/score/mean"
Z95 = 1.959964


def wilson(accuracy: float, n: int) -> tuple[float, float]:
    """95 % Wilson score interval of a proportion (sensible also at 0 % and 100 %, unlike the normal one)."""
    if n == 0:
        return 0.0, 1.0
    centre = (accuracy + Z95**2 / (2 * n)) / (1 + Z95**2 / n)
    half = Z95 * math.sqrt(accuracy * (1 - accuracy) / n + Z95**2 / (4 * n * n)) / (1 + Z95**2 / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def wall_seconds(tsv: str | None) -> float | None:
    """Seconds from a Snakemake benchmark file (column `s`); None when the stage has none (yet)."""
    if not tsv or not Path(tsv).exists():
        return None
    with open(tsv) as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    return float(rows[-1]["s"]) if rows else None


def lookup(config: dict, key: str):
    for part in key.split("."):
        config = config.get(part, {}) if isinstance(config, dict) else {}
    return config


def differing(configs: dict[str, dict]) -> list[str]:
    """The dotted config keys whose values are not the same in every variant (run_name always differs)."""
    keys = sorted({k for c in configs.values() for k in dotted_keys(c)} - {"run_name"})
    return [k for k in keys if len({json.dumps(lookup(c, k), sort_keys=True) for c in configs.values()}) > 1]


def summarise(run: str, spec: dict) -> dict:
    sft = json.loads(Path(spec["sft"]).read_text())["metrics"]
    ppo = json.loads(Path(spec["ppo"]).read_text())["metrics"] if spec.get("ppo") else []
    models = json.loads(Path(spec["eval"]).read_text())["models"]
    final_name, final = list(models.items())[-1]  # the table's last row is the final (merged) model
    losses, rewards = series(sft, "train/loss")[1], series(ppo, REWARD)[1]
    return {"run": run, "model": final_name, "accuracy": final["accuracy"], "n": final["n"],
            "ci": wilson(final["accuracy"], final["n"]), "sft_loss": losses[-1] if losses else None,
            "reward": rewards[-1] if rewards else None,
            "wall": {stage: wall_seconds(tsv) for stage, tsv in spec.get("benchmarks", {}).items()},
            "sft_metrics": sft, "ppo_metrics": ppo, "sft_path": spec["sft"]}


def best(rows: list[dict]) -> str:
    """Highest accuracy, then PPO reward, then lowest SFT loss (ties are common with few evaluation samples)."""
    def rank(r: dict) -> tuple:
        return (r["accuracy"], -math.inf if r["reward"] is None else r["reward"],
                -math.inf if r["sft_loss"] is None else -r["sft_loss"])
    return max(rows, key=rank)["run"]


def svg(fig) -> str:
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", bbox_inches="tight")
    plt.close(fig)
    text = buffer.getvalue()
    return text[text.index("<svg"):]  # inline: drop the XML prolog and doctype


def curves(rows: list[dict]) -> str:
    """Overlaid SFT loss (one line per distinct SFT: variants sharing one are named together) and PPO reward."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4), layout="constrained")
    shared: dict[str, list[dict]] = {}
    for row in rows:
        shared.setdefault(row["sft_path"], []).append(row)
    for group in shared.values():
        left.plot(*series(group[0]["sft_metrics"], "train/loss"), label=", ".join(short_name(r["run"]) for r in group),
                  gid=f"sft-{short_name(group[0]['run'])}")
    left.set(xlabel="step", ylabel="train loss", title="SFT loss", yscale="log")
    left.legend(fontsize="small")
    for row in rows:
        right.plot(*series(row["ppo_metrics"], REWARD), marker="o", label=short_name(row["run"]), gid=f"ppo-{short_name(row['run'])}")
    right.set(xlabel="PPO step", ylabel="mean reward", title="PPO reward (GSM8K exact match)")
    if any(row["ppo_metrics"] for row in rows):
        right.legend(fontsize="small")
    return svg(fig)


def short_name(run: str) -> str:
    return run.rsplit("/", 1)[-1]


def fmt(value, spec: str = ".4g") -> str:
    return "–" if value is None else format(value, spec)


def table(rows: list[dict], configs: dict[str, dict], winner: str) -> str:
    keys = differing(configs)
    head = "".join(f"<th>{html.escape(k)}</th>" for k in ["variant", *keys, "final SFT loss", "final PPO reward",
                                                           "eval accuracy (95% CI)", "SFT wall s", "PPO wall s"])
    body = []
    for row in rows:
        mark = " ★ best" if row["run"] == winner else ""
        cells = [f"{html.escape(short_name(row['run']))}{mark}"] + [html.escape(json.dumps(lookup(configs[row["run"]], k)))
                                                                     for k in keys]
        lo, hi = row["ci"]
        cells += [fmt(row["sft_loss"]), fmt(row["reward"]),
                  f"{row['accuracy']:.1%} [{lo:.1%}, {hi:.1%}] ({row['model']}, n={row['n']})",
                  fmt(row["wall"].get("sft"), ".0f"), fmt(row["wall"].get("ppo"), ".0f")]
        cls = " class='best'" if mark else ""
        body.append(f"<tr{cls}>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return f"<table id='compare-table'><tr>{head}</tr>{''.join(body)}</table>"


def render(experiment: str, variants: dict[str, dict]) -> str:
    rows = [summarise(run, spec) for run, spec in variants.items()]
    configs = {run: spec["config"] for run, spec in variants.items()}
    winner = best(rows)
    style = ("body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td,th{border:1px solid #999;"
             "padding:4px 8px;text-align:right}tr.best{background:#dfd;font-weight:bold}")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(experiment)}: comparison</title>"
            f"<style>{style}</style></head><body><h1>Experiment {html.escape(experiment)}</h1>"
            f"<p>{len(rows)} variants; best: <b>{html.escape(short_name(winner))}</b> (highest evaluation accuracy of "
            "the final model, then PPO reward, then SFT loss). Wall times are each stage's own job; a stage shared by several "
            "variants ran once and shows the same time in each.</p>"
            f"{table(rows, configs, winner)}<div id='curves'>{curves(rows)}</div></body></html>\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", required=True)
    parser.add_argument("--variants", required=True, help="JSON, see above")
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args(argv)
    atomic.write_text(args.out, render(args.experiment, json.loads(args.variants)))
    print(f"[compare] {args.out}")


if __name__ == "__main__":
    from llm_bridge.errors import run_main

    run_main(main)
