rule ppo:
    output:
        result=f"{RUN}/ppo/result.json",
        manifest=report(f"{RUN}/manifests/ppo.json", category="4. Stage configs and provenance", caption="../report/manifest.rst"),
    input:
        code=[f"{SRC}/ppo.py", f"{SRC}/launch.py"],
        sft_model=f"{RUN}/sft/model",
        data=[rules.parquet.output.train, rules.parquet.output.test],
    params:
        cfg=as_json({"ppo": stage_config("ppo"), "cluster": cluster(), "seed": config["seed"],
                     "max_prompt_length": config["data"]["max_prompt_length"], "stall_timeout_s": PRESET["stall_timeout_s"], "logging": verl_logging(), **preset_env()}),
    resources:
        **slurm_resources("ppo"),
    log:
        f"{RUN}/logs/ppo.log",
    shell:
        "python -m llm_bridge.ppo --params {params.cfg:q} --sft-model {input.sft_model} --data-dir {RUN}/parquet"
        " --out-dir {RUN}/ppo --log {log}" + record("ppo")
