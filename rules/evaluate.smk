EVAL_MODELS = {"base": ("base_model", "base_model"), "sft": ("sft_model", "sft/model") if PPO else ("merged_model", "merged_model")}
if PPO:
    EVAL_MODELS["ppo"] = ("merged_model", "merged_model")


def eval_models(wildcards):
    return {name: at(stage, path)(wildcards) for name, (stage, path) in EVAL_MODELS.items()}


rule evaluate:
    output:
        eval=f"{RUN}/evaluate/eval.json",
        manifest=report(f"{RUN}/manifests/evaluate.json", category="4. Stage configs and provenance", caption="../report/manifest.rst"),
    input:
        code=f"{SRC}/evaluate.py",
        test=at("parquet", "parquet/test.parquet"),
        models=lambda wildcards: list(eval_models(wildcards).values()),
    params:
        cfg=cfg("evaluate"),
        models=lambda wildcards: " ".join(f"--model {name}={path}" for name, path in eval_models(wildcards).items()),
    resources:
        **slurm_resources("evaluate"),
    log:
        f"{RUN}/logs/evaluate.log",
    shell:
        "python -m llm_bridge.evaluate --params {params.cfg:q} --test {input.test} {params.models} --out {output.eval}"
        " 2>&1 | tee {log}" + record("evaluate")
