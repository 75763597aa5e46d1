"""raw_data and parquet: the synthetic generator, answer extraction, and every validation error."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from llm_bridge import parquet, raw_data
from llm_bridge.errors import InputError

INSTRUCTION = "Think step by step."


def test_synthetic_is_deterministic_per_seed_and_disjoint():
    a = raw_data.synthetic_splits(300, 50, seed=1)
    b = raw_data.synthetic_splits(300, 50, seed=1)
    c = raw_data.synthetic_splits(300, 50, seed=2)
    assert a == b
    assert a != c
    train_q = {r["question"] for r in a["train"]}
    assert len(train_q) == 300
    assert not train_q & {r["question"] for r in a["test"]}


def test_synthetic_answers_are_correct_gsm8k_form():
    for record in raw_data.synthetic_splits(200, 1, seed=0)["train"]:
        expression = record["answer"].split("<<")[1].split("=")[0]
        truth = parquet.extract_solution(record["answer"])
        assert truth is not None and int(truth) == eval(expression)  # noqa: S307 - our own digits and + - *


@pytest.mark.parametrize("answer, expected", [
    ("3 + 4 = 7\n#### 7", "7"),
    ("#### 1,234", "1234"),
    ("#### -5", "-5"),
    ("#### 2.5", "2.5"),
    ("no marker 7", None),
    ("#### seven", None),
])
def test_extract_solution(answer, expected):
    assert parquet.extract_solution(answer) == expected


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


GOOD = {"question": "Ava has 2 pens and gets 3 more. How many pens?", "answer": "2 + 3 = 5\n#### 5"}


@pytest.mark.parametrize("bad, expected", [
    ({"answer": "#### 5"}, "row 1: field 'question' is missing"),
    ({"question": "  ", "answer": "#### 5"}, "row 1: field 'question' is empty"),
    ({"question": "Q?"}, "row 1: field 'answer' is missing"),
    ({"question": "Q?", "answer": "it is 5"}, "row 1: field 'answer' does not end in '#### <number>'"),
    ({"question": "Q?", "answer": "#### 1.2.3"}, "ground truth '1.2.3' after '####' is not a number"),
    (GOOD, "row 1: duplicate of row 0"),
    ({"question": "long " * 300, "answer": "#### 1"}, "row 1: field 'question': prompt is"),
])
def test_parquet_refuses_bad_rows_and_writes_nothing(tmp_path, tiny_tokenizer_dir, bad, expected):
    raw = tmp_path / "raw"
    raw.mkdir()
    write_jsonl(raw / "train.jsonl", [GOOD, bad])
    write_jsonl(raw / "test.jsonl", [GOOD])
    out = tmp_path / "pq"
    with pytest.raises(InputError) as err:
        parquet.main(["--params", json.dumps({"max_prompt_length": 96, "instruction": INSTRUCTION}),
                      "--raw-dir", str(raw), "--tokenizer", str(tiny_tokenizer_dir), "--out-dir", str(out)])
    message = str(err.value)
    assert str(raw / "train.jsonl") in message and expected in message
    assert not out.exists() or not any(out.iterdir())


def test_broken_jsonl_line_is_named(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text(json.dumps(GOOD) + "\n{not json\n")
    with pytest.raises(InputError, match=r"train.jsonl, line 2: not valid JSON"):
        raw_data.read_records(path)


def test_empty_and_missing_files_are_named(tmp_path):
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(InputError, match="empty.jsonl: the file holds no records"):
        raw_data.read_records(tmp_path / "empty.jsonl")
    with pytest.raises(InputError, match="nope.jsonl: data file not found"):
        raw_data.read_records(tmp_path / "nope.jsonl")


def test_parquet_has_verl_gsm8k_schema(tmp_path, tiny_tokenizer_dir):
    raw = tmp_path / "raw"
    raw.mkdir()
    splits = raw_data.synthetic_splits(20, 5, seed=0)
    for split, records in splits.items():
        write_jsonl(raw / f"{split}.jsonl", records)
    parquet.main(["--params", json.dumps({"max_prompt_length": 96, "instruction": INSTRUCTION}),
                  "--raw-dir", str(raw), "--tokenizer", str(tiny_tokenizer_dir), "--out-dir", str(tmp_path / "pq")])
    row = pq.read_table(tmp_path / "pq" / "train.parquet").to_pylist()[3]
    assert set(row) == {"data_source", "prompt", "ability", "reward_model", "extra_info"}
    assert row["data_source"] == "openai/gsm8k" and row["ability"] == "math"
    assert row["prompt"] == [{"role": "user", "content": f"{splits['train'][3]['question']} {INSTRUCTION}"}]
    assert row["reward_model"] == {"style": "rule", "ground_truth": parquet.extract_solution(splits["train"][3]["answer"])}
    assert row["extra_info"] == {"split": "train", "index": 3, "answer": splits["train"][3]["answer"], "question": splits["train"][3]["question"]}
    messages = pq.read_table(tmp_path / "pq" / "sft_train.parquet").to_pylist()[3]["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant"] and messages[1]["content"] == splits["train"][3]["answer"]


def test_sft_demonstrations_in_the_other_style_keep_the_ground_truth():
    records = raw_data.synthetic_splits(400, 1, seed=0)["train"]
    plain = parquet.sft_rows(records, INSTRUCTION)
    mixed = parquet.sft_rows(records, INSTRUCTION, other_style_fraction=0.7)
    assert mixed == parquet.sft_rows(records, INSTRUCTION, other_style_fraction=0.7)  # seeded
    answers = [row["messages"][1]["content"] for row in mixed]
    other = [a for a in answers if "####" not in a]
    assert 0.6 < len(other) / len(answers) < 0.8
    for record, answer, original in zip(records, answers, plain):
        assert original["messages"][1]["content"] == record["answer"]  # fraction 0: GSM8K's own form
        if "####" not in answer:  # the same working, the final line restyled, the same number
            working, final = answer.rsplit("\n", 1)
            assert record["answer"].startswith(working + "\n")
            assert final == f"The answer is {parquet.extract_solution(record['answer'])}."
    # the reward's ground truth comes from the raw answer, whatever the SFT style
    assert all(row["reward_model"]["ground_truth"] == parquet.extract_solution(r["answer"])
               for row, r in zip(parquet.verl_rows(records, "train", INSTRUCTION), records))


def test_real_gsm8k_validates(gsm8k_dir, tiny_tokenizer_dir):
    """The real data passes every check (with a prompt budget that fits GSM8K's longest questions)."""
    records = raw_data.read_records(gsm8k_dir / "train.jsonl")
    assert len(records) > 7000
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    parquet.validate(records[:500], gsm8k_dir / "train.jsonl", tokenizer, 4096, INSTRUCTION)


WRITE_ORDER = ["train.parquet", "sft_train.parquet", "test.parquet", "sft_test.parquet"]


@pytest.mark.parametrize("nth_write", [1, 2])  # the two large files: the small ones can finish between polls
def test_parquet_killed_mid_write_leaves_only_complete_files(tmp_path, nth_write):
    """SIGKILL once the stage has begun its nth parquet file: every file at an output path is complete and
    readable, the one being written is still a hidden .partial, and running the stage again finishes."""
    splits = raw_data.synthetic_splits(36000, 2000, seed=3)
    (tmp_path / "raw").mkdir()
    for split, records in splits.items():
        write_jsonl(tmp_path / "raw" / f"{split}.jsonl", records)
    out = tmp_path / "parquet"
    cmd = [sys.executable, "-m", "llm_bridge.parquet", "--params", json.dumps({"max_prompt_length": 512, "instruction": INSTRUCTION}),
           "--raw-dir", str(tmp_path / "raw"), "--out-dir", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    begun: set[str] = set()  # each write goes into its own .<name>.*.partial folder first, then takes its name
    while len(begun) < nth_write:
        assert proc.poll() is None, "the stage finished before the kill point: make the data larger"
        begun |= {name.split(".")[1] if name.endswith(".partial") else name.split(".")[0]
                  for name in (os.listdir(out) if out.exists() else [])}
        time.sleep(0.002)
    proc.kill()
    proc.wait()
    # A small file can finish between the poll and the kill, so the kill lands in the nth write or a later one;
    # either way the outputs are a prefix of the write order and the write that was cut left only its .partial
    # (or, killed between its move and its clean-up, the last finished write left its emptied one).
    finished = sorted((p.name for p in out.iterdir() if not p.name.endswith(".partial")), key=WRITE_ORDER.index)
    partials = [p.name for p in out.iterdir() if p.name.endswith(".partial")]
    assert len(finished) >= nth_write - 1 and finished == WRITE_ORDER[:len(finished)]
    assert len(partials) <= 1 and all(name.split(".")[1] + ".parquet" in WRITE_ORDER[max(len(finished) - 1, 0):len(finished) + 1]
                                      for name in partials)
    for name in finished:
        split = "train" if "train" in name else "test"
        assert pq.read_table(out / name).num_rows == len(splits[split])
    subprocess.run(cmd, check=True, capture_output=True)
    assert sorted(p.name for p in out.glob("*.parquet")) == ["sft_test.parquet", "sft_train.parquet", "test.parquet", "train.parquet"]
