rule merged_model:
    """The last trained stage (PPO when enabled, else SFT) as a Hugging Face model folder."""
    output:
        directory(f"{RUN}/merged_model"),
    input:
        code=f"{SRC}/merge.py",
        result=f"{RUN}/{LAST_TRAINED}/result.json",
    resources:
        **slurm_resources("merged_model"),
    log:
        f"{RUN}/logs/merged_model.log",
    shell:
        "python -m llm_bridge.merge --result {input.result} --out-dir {output} 2>&1 | tee {log}"


rule sft_model:
    """The SFT model as HF folder, for PPO's actor/critic and the SFT row of the eval table (only when PPO
    follows; otherwise merged_model is the SFT model)."""
    output:
        directory(f"{RUN}/sft/model"),
    input:
        code=f"{SRC}/merge.py",
        result=f"{RUN}/sft/result.json",
    log:
        f"{RUN}/logs/sft_model.log",
    shell:
        "python -m llm_bridge.merge --result {input.result} --out-dir {output} 2>&1 | tee {log}"
