rule evaluate:
    input:
        code=f"{SRC}/evaluate.py",
        test=at("parquet", "parquet/test.parquet"),
        models=lambda w: list(eval_models(w).values()),
    output:
        eval=f"{RUN}/evaluate/eval.json",
        manifest=stage_manifest("evaluate"),
    log:
        f"{RUN}/logs/evaluate.log",
    resources:
        **slurm_resources("evaluate"),
    params:
        cfg=cfg("evaluate"),
        models=lambda w: " ".join(f"--model {name}={path}" for name, path in eval_models(w).items()),
    shell:
        "python -m llm_bridge.evaluate --params {params.cfg:q} --test {input.test} {params.models} --out {output.eval}"
        " 2>&1 | tee {log}"
        " && python -m llm_bridge.provenance record --rule evaluate --params {params.cfg:q}"
        " --inputs {input} --outputs {output} --out {output.manifest}"
