rule base_model:
    output:
        model=directory(f"{RUN}/base_model"),
        manifest=report(f"{RUN}/manifests/base_model.json", category="4. Stage configs and provenance", caption="../report/manifest.rst"),
    input:
        code=f"{SRC}/base_model.py",
        train=rules.raw_data.output.train,  # the tiny model's tokenizer is trained on it
    params:
        cfg=as_json({"model": config["model"], "seed": config["seed"]}),
    log:
        f"{RUN}/logs/base_model.log",
    shell:
        "python -m llm_bridge.base_model --params {params.cfg:q} --raw-dir {RUN}/raw_data --out-dir {output.model} 2>&1 | tee {log}" + record("base_model")
