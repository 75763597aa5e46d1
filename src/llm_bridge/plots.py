"""Stage `plots`: the curves and the table for the Snakemake report (`snakemake --report report.html`).

SFT loss per step; PPO reward per step with a smoothed line, KL and response length per step (from verl's own
logged metrics in each stage's result.json) beside the evaluation accuracy of base / SFT / PPO with 95 %
intervals; and the evaluation table as an HTML fragment.

    python -m llm_bridge.plots --sft runs/tiny/sft/result.json [--ppo runs/tiny/ppo/result.json] \
        --eval runs/tiny/evaluate/eval.json --out-dir runs/tiny/report
"""
from __future__ import annotations

import argparse
import html
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on cluster nodes
import matplotlib.pyplot as plt  # noqa: E402

from llm_bridge import atomic  # noqa: E402
from llm_bridge.metrics import KL_METRICS  # noqa: E402

PPO_PANELS = [
    ("critic/score/mean", "mean reward per step (GSM8K exact match)"),
    ("kl", None),
    ("response_length/mean", "mean response length (tokens)"),
]
REWARD = PPO_PANELS[0][0]


def series(metrics: list[dict], key: str) -> tuple[list[int], list[float]]:
    points = [(m["step"], m[key]) for m in metrics if key in m]
    return [p[0] for p in points], [p[1] for p in points]


def save(fig, path: Path) -> None:
    with atomic.atomic_path(path) as tmp:
        fig.savefig(tmp, format=path.suffix.lstrip("."), bbox_inches="tight")
    plt.close(fig)


def sft_figure(metrics: list[dict], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(*series(metrics, "train/loss"), label="train loss")
    steps, val = series(metrics, "val/loss")
    if val:
        ax.plot(steps, val, "o", label="validation loss")
    ax.set(xlabel="step", ylabel="loss", title="SFT loss", yscale="log")
    ax.legend()
    save(fig, path)


def smoothed(values: list[float], window: int) -> list[float]:
    """Trailing mean over `window` steps (shorter at the start): per-step reward of a small batch is noisy."""
    return [sum(values[max(0, i - window + 1):i + 1]) / len(values[max(0, i - window + 1):i + 1]) for i in range(len(values))]


def accuracy_panel(ax, results: dict) -> None:
    """Accuracy of each evaluated model with its 95 % interval; n on the axis, since small n means wide bars."""
    names = list(results["models"])
    acc = [results["models"][m]["accuracy"] for m in names]
    ci = [results["models"][m].get("ci95", [a, a]) for m, a in zip(names, acc)]
    ax.bar(names, acc, yerr=[[a - lo for a, (lo, _) in zip(acc, ci)], [hi - a for a, (_, hi) in zip(acc, ci)]],
           capsize=6, color=["0.7", "tab:blue", "tab:green"][:len(names)])
    for x, a in enumerate(acc):
        ax.annotate(f"{a:.0%}", (x, a), xytext=(6, 2), textcoords="offset points")
    n = sorted({results["models"][m]["n"] for m in names})
    ax.set(title="eval accuracy, 95 % interval", xlabel=f"n = {'/'.join(map(str, n))} test problems (small n: wide interval)",
           ylim=(0, min(1.0, max(hi for _, hi in ci) + 0.1)))


def ppo_figure(metrics: list[dict], results: dict, path: Path) -> None:
    fig, axes = plt.subplots(1, len(PPO_PANELS) + 1, figsize=(17, 3.8), layout="constrained")
    for ax, (key, title) in zip(axes, PPO_PANELS):
        if key == "kl":
            key, title = next(((k, t) for k, t in KL_METRICS if series(metrics, k)[0]), KL_METRICS[-1])
        steps, values = series(metrics, key)
        ax.plot(steps, values, marker="o", alpha=0.5 if key == REWARD else 1.0, label="per step")
        if key == REWARD and values:
            window = max(2, len(values) // 4)  # a quarter of the steps: what tests/test_learning.py compares
            ax.plot(steps, smoothed(values, window), color="tab:red", lw=2, label=f"mean of last {window} steps")
            ax.legend(fontsize="small")
        ax.set(xlabel="PPO step", title=title)
    accuracy_panel(axes[-1], results)
    fig.suptitle("PPO")
    save(fig, path)


def eval_table_html(results: dict) -> str:
    rows = "".join(f"<tr><td>{html.escape(name)}</td><td>{r['accuracy']:.1%}</td>"
                   f"<td>{r['ci95'][0]:.1%} - {r['ci95'][1]:.1%}</td><td>{r['n']}</td></tr>" for name, r in results["models"].items())
    note = f"<p>{html.escape(results['note'])}</p>" if results.get("note") else ""
    return ("<html><body><table id='eval-table' border='1'><tr><th>model</th><th>GSM8K accuracy (exact match)</th>"
            f"<th>95 % interval</th><th>n</th></tr>{rows}</table>{note}</body></html>\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sft", required=True, type=Path)
    parser.add_argument("--ppo", type=Path)
    parser.add_argument("--eval", required=True, type=Path)
    parser.add_argument("--out-dir", required=True, type=Path)
    args = parser.parse_args(argv)
    results = json.loads(args.eval.read_text())
    sft_figure(json.loads(args.sft.read_text())["metrics"], args.out_dir / "sft_loss.svg")
    if args.ppo:
        ppo_figure(json.loads(args.ppo.read_text())["metrics"], results, args.out_dir / "ppo_curves.svg")
    atomic.write_text(args.out_dir / "eval_table.html", eval_table_html(results))
    print(f"[plots] written to {args.out_dir}")


if __name__ == "__main__":
    main()
