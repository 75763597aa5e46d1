rule parquet:
    output:
        train=f"{RUN}/parquet/train.parquet",
        test=f"{RUN}/parquet/test.parquet",
        sft_train=f"{RUN}/parquet/sft_train.parquet",
        sft_test=f"{RUN}/parquet/sft_test.parquet",
        manifest=report(f"{RUN}/manifests/parquet.json", category="4. Stage configs and provenance", caption="../report/manifest.rst"),
    input:
        code=f"{SRC}/parquet.py",
        raw=rules.raw_data.output,
        tokenizer=rules.base_model.output.model,
    params:
        cfg=as_json({k: config["data"][k] for k in ("max_prompt_length", "instruction")}),
    log:
        f"{RUN}/logs/parquet.log",
    shell:
        "python -m llm_bridge.parquet --params {params.cfg:q} --raw-dir {RUN}/raw_data --tokenizer {input.tokenizer}"
        " --out-dir {RUN}/parquet 2>&1 | tee {log}" + record("parquet")
