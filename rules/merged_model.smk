rule merged_model:
    """The last trained stage (PPO when enabled, else SFT) as a Hugging Face model folder."""
    input:
        code=f"{SRC}/merge.py",
        result=at(LAST_TRAINED, f"{LAST_TRAINED}/result.json"),
    output:
        model=directory(f"{RUN}/merged_model"),
        manifest=stage_manifest("merged_model"),
    log:
        f"{RUN}/logs/merged_model.log",
    resources:
        **slurm_resources("merged_model"),
    params:
        cfg=cfg("merged_model"),
    shell:
        "python -m llm_bridge.merge --result {input.result} --out-dir {output.model} --log {log}"
        " && python -m llm_bridge.provenance record --rule merged_model --params {params.cfg:q}"
        " --inputs {input} --outputs {output} --out {output.manifest}"


rule sft_model:
    """The SFT model as HF folder, for PPO's actor/critic and the SFT row of the eval table (only when PPO
    follows; otherwise merged_model is the SFT model)."""
    input:
        code=f"{SRC}/merge.py",
        result=at("sft", "sft/result.json"),
    output:
        model=directory(f"{RUN}/sft/model"),
        manifest=stage_manifest("sft_model"),
    log:
        f"{RUN}/logs/sft_model.log",
    params:
        cfg=cfg("sft_model"),
    shell:
        "python -m llm_bridge.merge --result {input.result} --out-dir {output.model} --log {log}"
        " && python -m llm_bridge.provenance record --rule sft_model --params {params.cfg:q}"
        " --inputs {input} --outputs {output} --out {output.manifest}"
