"""Per-step metrics from verl's `file` logger (one jsonl per attempt, since verl truncates the file it opens:
a resumed run must not erase the steps logged before the kill)."""
from __future__ import annotations

import json
import time
from pathlib import Path

# The KL shown (plots, live progress) is the first KL verl logged: to the reference policy (as a loss, or as a
# reward penalty) when the config uses one, else between the rollout engine's and the trainer's policy (drift).
KL_METRICS = [("actor/kl_loss", "KL to reference (actor loss term)"), ("critic/kl", "KL to reference (reward penalty)"),
              ("rollout_corr/kl", "KL(rollout || trainer policy)"), ("actor/ppo_kl", "KL(actor || old policy)")]


def new_log_path(work_dir: Path) -> Path:
    return work_dir / f"metrics-{time.strftime('%Y%m%dT%H%M%S')}-{time.monotonic_ns() % 10**6}.jsonl"


def collect(work_dir: Path) -> list[dict]:
    """All logged steps, in step order; a step logged again after a resume replaces the earlier record."""
    by_step: dict[int, dict] = {}
    for path in sorted(work_dir.glob("metrics-*.jsonl")):
        for line in path.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # the line being written when the process was killed
            step = record.get("step")
            if isinstance(step, int):
                by_step.setdefault(step, {"step": step}).update(record.get("data", {}))
    return [by_step[s] for s in sorted(by_step)]


def quarter_means(values: list[float]) -> tuple[float, float]:
    """Mean of the first and of the last quarter of a per-step series (at least one step each): the learning
    signal of a PPO run, less noisy than single steps."""
    if not values:
        raise ValueError("no steps logged")
    q = max(1, len(values) // 4)
    return sum(values[:q]) / q, sum(values[-q:]) / q
