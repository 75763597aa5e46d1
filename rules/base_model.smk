rule base_model:
    input:
        code=f"{SRC}/base_model.py",
        train=rules.raw_data.output.train,  # the tiny model's tokenizer is trained on it
    output:
        model=directory(f"{RUN}/base_model"),
        manifest=stage_manifest("base_model"),
    log:
        f"{RUN}/logs/base_model.log",
    params:
        cfg=as_json({"model": config["model"], "seed": config["seed"]}),
        raw_dir=lambda w, input: os.path.dirname(input.train),
    shell:
        "python -m llm_bridge.base_model --params {params.cfg:q} --raw-dir {params.raw_dir} --out-dir {output.model} 2>&1 | tee {log}"
        " && python -m llm_bridge.provenance record --rule base_model --params {params.cfg:q}"
        " --inputs {input} --outputs {output} --out {output.manifest}"
