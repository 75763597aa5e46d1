rule parquet:
    output:
        train=f"{RUN}/parquet/train.parquet",
        test=f"{RUN}/parquet/test.parquet",
        sft_train=f"{RUN}/parquet/sft_train.parquet",
        sft_test=f"{RUN}/parquet/sft_test.parquet",
        manifest=report(f"{RUN}/manifests/parquet.json", category="4. Stage configs and provenance", caption="../report/manifest.rst"),
    input:
        code=f"{SRC}/parquet.py",
        raw=at("raw_data", "raw_data/train.jsonl", "raw_data/test.jsonl", "manifests/raw_data.json"),
        tokenizer=at("base_model", "base_model"),
    params:
        cfg=cfg("parquet"),
    log:
        f"{RUN}/logs/parquet.log",
    shell:
        "python -m llm_bridge.parquet --params {params.cfg:q} --raw-dir $(dirname {input.raw[0]}) --tokenizer {input.tokenizer}"
        " --out-dir $(dirname {output.train}) 2>&1 | tee {log}" + record("parquet")
