EVAL_MODELS = {"base": rules.base_model.output.model, "sft": f"{RUN}/sft/model" if PPO else f"{RUN}/merged_model"}
if PPO:
    EVAL_MODELS["ppo"] = f"{RUN}/merged_model"


rule evaluate:
    output:
        eval=f"{RUN}/evaluate/eval.json",
        manifest=report(f"{RUN}/manifests/evaluate.json", category="4. Stage configs and provenance", caption="../report/manifest.rst"),
    input:
        code=f"{SRC}/evaluate.py",
        test=rules.parquet.output.test,
        models=list(EVAL_MODELS.values()),
    params:
        cfg=as_json({**config["evaluate"], "note": "" if PPO else
                     "PPO is off in this config (ppo.enabled: false): the merged model is the SFT model."}),
        models=" ".join(f"--model {name}={path}" for name, path in EVAL_MODELS.items()),
    resources:
        **slurm_resources("evaluate"),
    log:
        f"{RUN}/logs/evaluate.log",
    shell:
        "python -m llm_bridge.evaluate --params {params.cfg:q} --test {input.test} {params.models} --out {output.eval}"
        " 2>&1 | tee {log}" + record("evaluate")
