"""Stage `raw_data`: GSM8K-form jsonl (`question`, `answer` ending in `#### <number>`), train and test.

Sources: `synthetic` (the embedded default: a seeded generator of one-step arithmetic word problems, easy
enough that a tiny model learns them on a CPU), `local` (GSM8K jsonl/parquet files) or `hub` (a dataset id
at a pinned revision through `datasets`).

    python -m llm_bridge.raw_data --params '<json of config>' --out-dir runs/tiny/raw_data
"""
from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from llm_bridge import atomic
from llm_bridge.errors import InputError

NAMES = ["Ava", "Ben", "Cleo", "Dan", "Eli", "Fay", "Gus", "Ivy", "Jon", "Kim", "Leo", "Mia", "Ned", "Ola"]
ITEMS = ["apples", "books", "coins", "pens", "shells", "cards", "eggs", "stamps", "rocks", "cups"]

# (question template, operator, calculator expression); numbers stay small so answers are 0..81.
TEMPLATES = [
    ("{n} has {a} {i}. {n} gets {b} more {i}. How many {i} does {n} have now?", "+"),
    ("{n} has {a} {i} and buys {b} more. How many {i} does {n} have?", "+"),
    ("{n} had {a} {i} and gave away {b}. How many {i} are left?", "-"),
    ("{n} has {a} {i}. {n} loses {b} of them. How many {i} does {n} have now?", "-"),
    ("{n} has {a} boxes with {b} {i} in each box. How many {i} does {n} have?", "*"),
]


def synthetic_example(rng: random.Random) -> dict:
    template, op = rng.choice(TEMPLATES)
    a, b = rng.randint(1, 9), rng.randint(1, 9)
    if op == "-" and b > a:
        a, b = b, a
    result = {"+": a + b, "-": a - b, "*": a * b}[op]
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    question = template.format(n=name, a=a, b=b, i=item)
    answer = f"{a} {op} {b} = <<{a}{op}{b}={result}>>{result}\n#### {result}"
    return {"question": question, "answer": answer}


# The generator knows about 46k distinct problems; drawing new ones slows down sharply near that, and beyond it
# the search for an unseen problem would never end.
SYNTHETIC_MAX = 40_000


def synthetic_too_many(n_train: int, n_test: int) -> str:
    return (f"data.synthetic: n_train + n_test = {n_train + n_test}, but the synthetic generator makes at most "
            f"{SYNTHETIC_MAX} distinct problems. Lower data.synthetic.n_train / n_test, or use real GSM8K "
            "(data.source: local or hub).")


def synthetic_splits(n_train: int, n_test: int, seed: int) -> dict[str, list[dict]]:
    """Deterministic for the seed; no question appears twice, so test never leaks into train."""
    if n_train + n_test > SYNTHETIC_MAX:
        raise InputError(synthetic_too_many(n_train, n_test))
    rng, seen, examples = random.Random(f"llm-bridge/{seed}"), set(), []
    while len(examples) < n_train + n_test:
        example = synthetic_example(rng)
        if example["question"] not in seen:
            seen.add(example["question"])
            examples.append(example)
    return {"train": examples[:n_train], "test": examples[n_train:]}


def read_records(path: Path) -> list[dict]:
    """Read GSM8K records from jsonl or parquet, naming the file and line of anything unreadable."""
    if not path.exists():
        raise InputError(f"{path}: data file not found. Set data.local.train/test in the config to existing files.")
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    records = []
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise InputError(f"{path}, line {lineno}: not valid JSON ({exc.msg}). Fix or remove that line.") from exc
    if not records:
        raise InputError(f"{path}: the file holds no records. Point data.local at a non-empty GSM8K file.")
    return records


def hub_split(hub: dict, split: str) -> list[dict]:
    """The real code path for production (needs network): a pinned revision of a Hub dataset."""
    import datasets

    ds = datasets.load_dataset(hub["id"], hub["config"], revision=hub["revision"], split=split)
    return [{"question": r["question"], "answer": r["answer"]} for r in ds]


def load_splits(data: dict, seed: int) -> dict[str, list[dict]]:
    source = data["source"]
    if source == "synthetic":
        return synthetic_splits(data["synthetic"]["n_train"], data["synthetic"]["n_test"], seed)
    if source == "local":
        return {split: read_records(Path(data["local"][split])) for split in ("train", "test")}
    if source == "hub":
        return {split: hub_split(data["hub"], split) for split in ("train", "test")}
    raise InputError(f"config data.source: unknown source {source!r}; use synthetic, local or hub.")


def source_name(data: dict, split: str) -> str:
    return data["local"][split] if data["source"] == "local" else f"{data['source']} data ({split} split)"


def write_jsonl(path: Path, records: list[dict]) -> None:
    atomic.write_text(path, "".join(json.dumps({"question": r.get("question"), "answer": r.get("answer")}) + "\n" for r in records))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", required=True, help="JSON: {data: ..., seed: ...}")
    parser.add_argument("--out-dir", required=True, type=Path)
    args = parser.parse_args(argv)
    params = json.loads(args.params)
    splits = load_splits(params["data"], params["seed"])
    from llm_bridge.parquet import validate

    for split, records in splits.items():  # every row checked before anything is written or trained on
        validate(records, source_name(params["data"], split), None, params["data"]["max_prompt_length"], "")
    for split, records in splits.items():
        write_jsonl(args.out_dir / f"{split}.jsonl", records)
        print(f"[raw_data] {split}: {len(records)} records -> {args.out_dir / f'{split}.jsonl'}")


if __name__ == "__main__":
    from llm_bridge.errors import run_main

    run_main(main)
