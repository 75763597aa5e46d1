"""Stage `parquet`: validate every GSM8K record, then write verl's parquet files.

`{split}.parquet` has the schema of verl's own GSM8K preprocessing (examples/data_preprocess/gsm8k.py):
`data_source`, chat `prompt`, `ability`, `reward_model.ground_truth`, `extra_info{split,index,answer,question}`;
PPO and evaluation read it. `sft_{split}.parquet` holds the same rows as chat `messages` for verl's SFT trainer
(on synthetic data, a configured fraction of them in another answer style: `sft_rows`).
Every row is checked before anything is written, and all problems are reported together, each naming the
file, row and field.

    python -m llm_bridge.parquet --params '<json>' --raw-dir runs/tiny/raw_data --tokenizer runs/tiny/base_model --out-dir runs/tiny/parquet
"""
from __future__ import annotations

import argparse
import json
import random
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from llm_bridge import atomic
from llm_bridge.errors import InputError
from llm_bridge.raw_data import read_records

# verl's gsm8k scorer is chosen by this data_source; the synthetic data uses it too (same answer format).
DATA_SOURCE = "openai/gsm8k"
ANSWER_RE = re.compile(r"#### (\-?[0-9\.\,]+)\s*$")
MAX_REPORTED = 20


def extract_solution(answer: str) -> str | None:
    """The number after '####', commas removed (as verl's preprocessing does); None if absent."""
    match = ANSWER_RE.search(answer.strip())
    return match.group(1).replace(",", "") if match else None


def is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def row_problems(record: dict, prompt_tokens: int | None, max_prompt_length: int) -> list[str]:
    problems = []
    for field in ("question", "answer"):
        value = record.get(field)
        if value is None:
            problems.append(f"field '{field}' is missing")
        elif not isinstance(value, str) or not value.strip():
            problems.append(f"field '{field}' is empty or not text")
    if problems:
        return problems
    solution = extract_solution(record["answer"])
    if solution is None:
        problems.append("field 'answer' does not end in '#### <number>' (GSM8K's final-answer marker)")
    elif not is_number(solution):
        problems.append(f"field 'answer': ground truth {solution!r} after '####' is not a number")
    if prompt_tokens is not None and prompt_tokens > max_prompt_length:
        problems.append(
            f"field 'question': prompt is {prompt_tokens} tokens, longer than data.max_prompt_length={max_prompt_length}"
            " (raise data.max_prompt_length or drop the row)"
        )
    return problems


def count_prompt_tokens(tokenizer, messages: list[dict]) -> int:
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def validate(records: list[dict], path: Path, tokenizer, max_prompt_length: int, instruction: str) -> None:
    """Raise InputError listing every bad row of `path` (first MAX_REPORTED shown)."""
    errors, seen = [], {}
    for index, record in enumerate(records):
        prompt_tokens = None
        if tokenizer is not None and isinstance(record.get("question"), str):
            prompt_tokens = count_prompt_tokens(tokenizer, chat_prompt(record["question"], instruction))
        errors += [f"{path}, row {index}: {p}" for p in row_problems(record, prompt_tokens, max_prompt_length)]
        key = (record.get("question"), record.get("answer"))
        if key in seen:
            errors.append(f"{path}, row {index}: duplicate of row {seen[key]} (same question and answer); remove it")
        seen.setdefault(key, index)
    if errors:
        shown = "\n  ".join(errors[:MAX_REPORTED])
        more = f"\n  ... and {len(errors) - MAX_REPORTED} more" if len(errors) > MAX_REPORTED else ""
        raise InputError(f"{len(errors)} problem(s) in the input data; nothing was written:\n  {shown}{more}")


def chat_prompt(question: str, instruction: str) -> list[dict]:
    return [{"role": "user", "content": f"{question} {instruction}"}]


def verl_rows(records: list[dict], split: str, instruction: str) -> list[dict]:
    return [
        {
            "data_source": DATA_SOURCE,
            "prompt": chat_prompt(r["question"], instruction),
            "ability": "math",
            "reward_model": {"style": "rule", "ground_truth": extract_solution(r["answer"])},
            "extra_info": {"split": split, "index": i, "answer": r["answer"], "question": r["question"]},
        }
        for i, r in enumerate(records)
    ]


def other_style(answer: str) -> str:
    """The final line '#### N' written 'The answer is N.': the other answer style of SFT data mixed from sources."""
    return ANSWER_RE.sub(lambda m: f"The answer is {m.group(1)}.", answer.strip())


def sft_rows(records: list[dict], instruction: str, other_style_fraction: float = 0.0, split: str = "train") -> list[dict]:
    """Chat rows for verl's SFT trainer. A seeded `other_style_fraction` of the demonstrations ends in the other
    style (see other_style); verl's GSM8K reward and the evaluation pay only for '#### N', so the SFT model then
    has a style left to learn that PPO's reward teaches (the embedded default's learning check, issue 13)."""
    rng = random.Random(f"llm-bridge/answer-style/{split}")
    pick = [rng.random() < other_style_fraction for _ in records]
    return [{"messages": chat_prompt(r["question"], instruction)
             + [{"role": "assistant", "content": other_style(r["answer"]) if other else r["answer"]}]}
            for r, other in zip(records, pick)]


def write_parquet(path: Path, rows: list[dict]) -> None:
    with atomic.atomic_path(path) as tmp:
        pq.write_table(pa.Table.from_pylist(rows), tmp)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", required=True, help="JSON: {max_prompt_length, instruction, sft_other_style_fraction}")
    parser.add_argument("--raw-dir", required=True, type=Path)
    parser.add_argument("--tokenizer", type=Path, help="model folder whose tokenizer measures prompt length")
    parser.add_argument("--out-dir", required=True, type=Path)
    args = parser.parse_args(argv)
    params = json.loads(args.params)
    tokenizer = None
    if args.tokenizer:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    splits = {split: read_records(args.raw_dir / f"{split}.jsonl") for split in ("train", "test")}
    for split, records in splits.items():  # validate everything before writing anything
        validate(records, args.raw_dir / f"{split}.jsonl", tokenizer, params["max_prompt_length"], params["instruction"])
    for split, records in splits.items():
        write_parquet(args.out_dir / f"{split}.parquet", verl_rows(records, split, params["instruction"]))
        write_parquet(args.out_dir / f"sft_{split}.parquet",
                      sft_rows(records, params["instruction"], params.get("sft_other_style_fraction", 0.0), split))
        print(f"[parquet] {split}: {len(records)} rows validated -> {args.out_dir}/{{,sft_}}{split}.parquet")


if __name__ == "__main__":
    from llm_bridge.errors import run_main

    run_main(main)
