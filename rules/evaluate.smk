EVAL_MODELS = {"base": rules.base_model.output.model, "sft": f"{RUN}/sft/model" if PPO else f"{RUN}/merged_model"}
if PPO:
    EVAL_MODELS["ppo"] = f"{RUN}/merged_model"


rule evaluate:
    input:
        code=f"{SRC}/evaluate.py",
        test=rules.parquet.output.test,
        models=list(EVAL_MODELS.values()),
    output:
        eval=f"{RUN}/evaluate/eval.json",
        manifest=stage_manifest("evaluate"),
    log:
        f"{RUN}/logs/evaluate.log",
    resources:
        **slurm_resources("evaluate"),
    params:
        cfg=as_json(
            {
                **config["evaluate"],
                "note": (
                    "" if PPO else "PPO is off in this config (ppo.enabled: false): the merged model is the SFT model."
                ),
            }
        ),
        models=" ".join(f"--model {name}={path}" for name, path in EVAL_MODELS.items()),
    shell:
        "python -m llm_bridge.evaluate --params {params.cfg:q} --test {input.test} {params.models} --out {output.eval}"
        " 2>&1 | tee {log}"
        " && python -m llm_bridge.provenance record --rule evaluate --params {params.cfg:q}"
        " --inputs {input} --outputs {output} --out {output.manifest}"
