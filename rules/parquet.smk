rule parquet:
    input:
        code=f"{SRC}/parquet.py",
        raw=rules.raw_data.output,
        tokenizer=rules.base_model.output.model,
    output:
        train=f"{RUN}/parquet/train.parquet",
        test=f"{RUN}/parquet/test.parquet",
        sft_train=f"{RUN}/parquet/sft_train.parquet",
        sft_test=f"{RUN}/parquet/sft_test.parquet",
        manifest=stage_manifest("parquet"),
    log:
        f"{RUN}/logs/parquet.log",
    params:
        cfg=as_json({k: config["data"][k] for k in ("max_prompt_length", "instruction")}),
        raw_dir=lambda w, input: os.path.dirname(input.raw[0]),
        out_dir=lambda w, output: os.path.dirname(output.train),
    shell:
        "python -m llm_bridge.parquet --params {params.cfg:q} --raw-dir {params.raw_dir} --tokenizer {input.tokenizer}"
        " --out-dir {params.out_dir} 2>&1 | tee {log}"
        " && python -m llm_bridge.provenance record --rule parquet --params {params.cfg:q}"
        " --inputs {input} --outputs {output} --out {output.manifest}"
