rule merged_model:
    """The last trained stage (PPO when enabled, else SFT) as a Hugging Face model folder."""
    output:
        model=directory(f"{RUN}/merged_model"),
        manifest=report(f"{RUN}/manifests/merged_model.json", category="4. Stage configs and provenance", caption="../report/manifest.rst"),
    input:
        code=f"{SRC}/merge.py",
        result=f"{RUN}/{LAST_TRAINED}/result.json",
    resources:
        **slurm_resources("merged_model"),
    params:
        cfg="{}",
    log:
        f"{RUN}/logs/merged_model.log",
    shell:
        "python -m llm_bridge.merge --result {input.result} --out-dir {output.model} --log {log}" + record("merged_model")


rule sft_model:
    """The SFT model as HF folder, for PPO's actor/critic and the SFT row of the eval table (only when PPO
    follows; otherwise merged_model is the SFT model)."""
    output:
        model=directory(f"{RUN}/sft/model"),
        manifest=report(f"{RUN}/manifests/sft_model.json", category="4. Stage configs and provenance", caption="../report/manifest.rst"),
    input:
        code=f"{SRC}/merge.py",
        result=f"{RUN}/sft/result.json",
    params:
        cfg="{}",
    log:
        f"{RUN}/logs/sft_model.log",
    shell:
        "python -m llm_bridge.merge --result {input.result} --out-dir {output.model} --log {log}" + record("sft_model")
