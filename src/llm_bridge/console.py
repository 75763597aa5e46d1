"""What a training stage shows on the terminal. verl's, Ray's and vLLM's output go only to the stage's log file;
the terminal gets the stage's own lines, live progress read from verl's per-step metrics jsonl (a rich bar on a
terminal, a plain line at most every 10 s otherwise: CI, a SLURM job's log), PPO's start-up phase by phase (from
verl's own log lines: what runs now, then one line with what each phase took), and on failure the log's last 30
lines with the error in one sentence."""
from __future__ import annotations

import json
import os
import re
import sys
import time
from pathlib import Path

from llm_bridge.metrics import KL_METRICS

PLAIN_EVERY_S = 10.0  # without a terminal: a progress line at most this often (a tenth of the steps done)...
QUIET_EVERY_S = 60.0  # ...and at least this often while no step finishes (verl starting, a long step)
# verl's PPO start-up as its log tells it (verl 0.9.1; Ray's own line first): the line that ends each phase, the
# phase, and what runs after it. Until the first step is done the terminal says what runs now, then one line says
# where the start-up went (5-6 minutes on one H200, most of it vLLM's: docs/benchmarks.md).
AGENT_LOOPS_UP = "agent-loop workers took their first batch"  # printed by llm_bridge.verl_fixes: verl has no such line
PPO_STARTUP = (
    ("Started a local Ray instance", "launch and Ray", "loading the data"),
    ("dataloader initialized", "data", "building the FSDP workers"),
    ("actor and ref model engine initialized", "FSDP workers", "starting vLLM"),
    ("all initialize finished, ready to fit", "vLLM", "starting the agent loops"),
    (AGENT_LOOPS_UP, "agent loops", "the first step"),
)
STAMP = re.compile(r"(\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2})[,.](\d{3})")  # Ray's and verl's log timestamps


def console_mode() -> str:
    """`logging.console` of the config (the Snakefile exports it): `compact` (default) or `full` (verl's whole
    output on the terminal as well, for debugging)."""
    return os.environ.get("LLM_BRIDGE_CONSOLE", "compact")


def interactive() -> bool:
    """A bar only where a person watches a terminal: not in CI, a SLURM job log, or a pipe."""
    return sys.__stdout__.isatty() and os.environ.get("TERM") != "dumb"


def metrics_summary(stage: str, record: dict) -> str:
    """The metric that matters: SFT's train loss; PPO's mean reward and the first KL verl logged."""
    if stage == "sft":
        keys = [("loss", "train/loss")]
    else:
        keys = [("reward", "critic/score/mean")] + [("kl", k) for k, _ in KL_METRICS if k in record][:1]
    return "  ".join(f"{label} {record[key]:.4g}" for label, key in keys if isinstance(record.get(key), (int, float)))


def log_time(line: str) -> float | None:
    """The epoch seconds of the first Ray/verl timestamp in `line` (local time, as they write it); None if it has
    none, or one that only looks like a timestamp. Never raises."""
    if not (stamp := STAMP.search(line)):
        return None
    try:
        return time.mktime(time.strptime(stamp[1], "%Y-%m-%d %H:%M:%S")) + int(stamp[2]) / 1e3
    except (ValueError, OverflowError):
        return None


def startup_mark(line: str, phases=PPO_STARTUP) -> tuple[str, float] | None:
    """(phase, its end in epoch seconds, from the line's timestamp) if `line` ends a start-up phase, else None.
    Never raises: the launcher's reader thread calls it on every line the child prints."""
    for marker, phase, _ in phases:
        if marker in line:
            return (phase, when) if (when := log_time(line)) is not None else None
    return None


def startup_marks(text: str, phases=PPO_STARTUP) -> dict[str, float]:
    """Each start-up phase whose closing line is in `text` (a stage log) -> when it ended (the first such line)."""
    marks: dict[str, float] = {}
    for line in text.splitlines():
        if mark := startup_mark(line, phases):
            marks.setdefault(*mark)
    return marks


def startup_split(marks: dict[str, float], started: float, first_step_done: float | None = None,
                  phases=PPO_STARTUP) -> list[tuple[str, float]]:
    """(phase, seconds) in order from `started` (the launch, epoch seconds) to the first step's end. A phase whose
    line is missing (no local Ray when joining a cluster's) is named together with the next one found."""
    split, last, pending = [], started, []
    for _, phase, _ in phases:
        pending.append(phase)
        if phase in marks:
            split.append((" + ".join(pending), marks[phase] - last))
            last, pending = marks[phase], []
    if first_step_done is not None:
        split.append((" + ".join([*pending, "first step"]), first_step_done - last))
    return split


def duration(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


class StageProgress:
    """Follows `metrics_path` (verl's file logger) and shows step / total, the key metrics, step time and ETA.
    Call `update()` about once a second from the launcher's wait loop and `close()` when the child is gone."""

    def __init__(self, stage: str, metrics_path: Path, total_steps: int, first_step: int = 0,
                 startup=()):
        """`startup`: the phases (e.g. PPO_STARTUP) to follow in the child's output (`saw`) until the first step."""
        self.stage, self.path, self.total = stage, Path(metrics_path), total_steps
        self.start, self.started = time.monotonic(), time.time()
        self.startup, self.marks = startup, {}
        self.first_step = first_step  # a resumed run starts at its checkpoint: its speed counts from there
        self.step, self.record, self.offset = first_step, {}, 0
        self.step_times: list[float] = []
        self.last_step_at = self.start
        self.last_plain, self.shown_step = self.start, first_step
        self.tee = sys.stdout if isinstance(sys.stdout, Tee) else None  # rich's bar swaps sys.stdout while it runs
        self.bar = self._make_bar() if interactive() else None

    def _make_bar(self):
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TextColumn("{task.fields[eta]}"),
                            console=Console(file=sys.__stdout__), transient=False)
        self.task = progress.add_task(self.stage, total=self.total, completed=self.step, info="starting", eta="")
        progress.start()
        return progress

    def read_new(self) -> None:
        """New complete lines of the jsonl since the last call (a partly written last line waits)."""
        if not self.path.exists():
            return
        with self.path.open() as fh:
            fh.seek(self.offset)
            chunk = fh.read()
        complete = chunk[: chunk.rfind("\n") + 1]
        self.offset += len(complete.encode())
        now = time.monotonic()
        for line in complete.splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(rec.get("step"), int) and rec["step"] > self.step:
                took = now - self.last_step_at
                if self.step == self.first_step and self.startup:
                    last, seconds = self.say_startup(time.time())[-1]
                    took = seconds if last == "first step" else took  # its ETA without the start-up's minutes
                self.step, self.record = rec["step"], {**self.record, **rec.get("data", {})}
                self.step_times.append(took)
                self.last_step_at = now

    def saw(self, line: str) -> None:
        """A line of the child's output (from the launcher's reader thread): notes where the start-up has got to."""
        if self.startup and self.step == self.first_step and (mark := startup_mark(line, self.startup)):
            self.marks.setdefault(*mark)

    def say_startup(self, first_step_done: float) -> list[tuple[str, float]]:
        """One line: how long the start-up took and where it went (the first step carries compilation too)."""
        split = startup_split(self.marks, self.started, first_step_done, self.startup)
        line = (f"[{self.stage}] start-up {duration(first_step_done - self.started)}: "
                + " · ".join(f"{phase} {seconds:.0f} s" for phase, seconds in split))
        if self.bar is None:
            print(line, flush=True)  # the terminal and, through the stage's Tee, its log
        else:
            self.bar.console.print(line, markup=False, highlight=False)
            if self.tee is not None:
                self.tee.log.write(line + "\n")
        return split

    def status(self) -> tuple[str, str]:
        """(what it does now with the key metrics, the step time and ETA)."""
        if self.step == self.first_step:
            if not self.startup:
                return "starting verl (no step finished yet)", ""
            now = [after for _, phase, after in self.startup if phase in self.marks]
            return f"starting verl: {now[-1] if now else self.startup[0][1]}", ""
        recent = self.step_times[1:][-5:] or self.step_times  # the first step also holds verl's start-up
        per_step = sum(recent) / len(recent)
        eta = f"{per_step:.1f} s/step, ETA {duration(per_step * max(self.total - self.step, 0))}"
        return metrics_summary(self.stage, self.record), eta

    def update(self, force: bool = False) -> None:
        self.read_new()
        info, eta = self.status()
        if self.bar is not None:
            self.bar.update(self.task, completed=min(self.step, self.total), info=info, eta=eta)
            return
        now = time.monotonic()
        since = now - self.last_plain
        # a line for news (another tenth of the steps done) at most every 10 s, and every 60 s without news: a
        # long stage stays visibly alive and still prints a few dozen lines at most
        news = self.step * 10 // max(self.total, 1) > self.shown_step * 10 // max(self.total, 1)
        if force or (since >= PLAIN_EVERY_S and news) or since >= QUIET_EVERY_S:
            self.last_plain, self.shown_step = now, self.step
            parts = [f"step {self.step}/{self.total}", info, eta, f"{duration(now - self.start)} elapsed"]
            print(f"[{self.stage}] " + " · ".join(p for p in parts if p), file=sys.__stdout__, flush=True)

    def close(self) -> None:
        """The last state: the bar at its final step, or (no terminal) a last line if a step went unshown."""
        self.read_new()
        if self.bar is not None:
            self.update()
            self.bar.stop()
        elif self.step > self.shown_step:
            self.update(force=True)


class Tee:
    """The stage's own lines go to the terminal and to its log, as `| tee` would (the training rules do not pipe
    through tee: the progress bar needs the terminal itself)."""

    def __init__(self, log_path: Path):
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log = log_path.open("a", buffering=1)

    def write(self, text: str) -> int:
        sys.__stdout__.write(text)
        return self.log.write(text)

    def flush(self) -> None:
        sys.__stdout__.flush()
        self.log.flush()


def tee_stdout(log_path: Path) -> None:
    sys.stdout = Tee(log_path)


# The error in one line: the last exception line of a traceback ("RuntimeError: ..."), else a line that says error
EXCEPTION_LINE = re.compile(r"^([\w.]+(Error|Exception|Interrupt)(\([\w.]+\))?|Killed)\b")
ERROR_LINE = re.compile(r"\b(error|failed|out of memory)\b", re.IGNORECASE)
PREFIX = re.compile(r"\x1b\[[0-9;]*m|^\s*\([\w:. ]+pid=\d+[^)]*\)\s*")  # colours, Ray's "(Worker pid=N)" prefix
TAIL_LINES = 30


def failure(log_path: Path, since: int, what: str, reason: str) -> str:
    """Print the last 30 lines the failed child wrote to `log_path` (from byte `since`: this attempt only) and
    return the error in one sentence: its last line that looks like an error, else its last line."""
    with log_path.open("rb") as fh:
        fh.seek(max(since, log_path.stat().st_size - 2**20))  # the last MiB: a long run's log can be huge
        lines = [line for line in fh.read().decode(errors="replace").splitlines() if line.strip()]
    tail = lines[-TAIL_LINES:]
    print(f"---- {what}: the last {len(tail)} lines of {log_path} ----", *tail, "----", sep="\n", file=sys.__stdout__, flush=True)
    plain = [PREFIX.sub("", line).strip() for line in lines]
    error = ([line for line in plain if EXCEPTION_LINE.match(line)] or [line for line in plain[-TAIL_LINES:] if ERROR_LINE.search(line)]
             or plain[-1:] or ["(no output)"])[-1]
    return f"{what} {reason}: {error[-300:]!r}. Full log: {log_path}"
