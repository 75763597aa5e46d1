rule ppo:
    input:
        code=[f"{SRC}/ppo.py", f"{SRC}/launch.py", f"{SRC}/seeded_rollout.py"],
        sft_model=f"{RUN}/sft/model",
        train=rules.parquet.output.train,
        test=rules.parquet.output.test,
    output:
        result=f"{RUN}/ppo/result.json",
        manifest=stage_manifest("ppo"),
    log:
        f"{RUN}/logs/ppo.log",
    resources:
        **slurm_resources("ppo"),
    params:
        cfg=as_json(
            {
                "ppo": stage_config("ppo"),
                "cluster": cluster(),
                "seed": config["seed"],
                "max_prompt_length": config["data"]["max_prompt_length"],
                "stall_timeout_s": PRESET["stall_timeout_s"],
                "logging": verl_logging(),
                **preset_env(),
            }
        ),
        data_dir=lambda w, input: os.path.dirname(input.train),
        out_dir=lambda w, output: os.path.dirname(output.result),
    shell:
        "python -m llm_bridge.ppo --params {params.cfg:q} --sft-model {input.sft_model} --data-dir {params.data_dir}"
        " --out-dir {params.out_dir} --log {log}"
        " && python -m llm_bridge.provenance record --rule ppo --params {params.cfg:q}"
        " --inputs {input} --outputs {output} --out {output.manifest}"
