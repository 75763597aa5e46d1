rule sft:
    output:
        # verl's checkpoints live in sft/checkpoints (kept across a kill, so a rerun resumes);
        # result.json, written last, names the finished checkpoint and holds the loss curve.
        result=f"{RUN}/sft/result.json",
        manifest=report(f"{RUN}/manifests/sft.json", category="4. Stage configs and provenance", caption="../report/manifest.rst"),
    input:
        code=[f"{SRC}/sft.py", f"{SRC}/launch.py"],
        base_model=rules.base_model.output.model,
        data=[rules.parquet.output.sft_train, rules.parquet.output.sft_test],
    params:
        cfg=as_json({"sft": stage_config("sft"), "cluster": cluster(), "seed": config["seed"],
                     "stall_timeout_s": PRESET["stall_timeout_s"], "logging": verl_logging(), **preset_env()}),
    resources:
        **slurm_resources("sft"),
    log:
        f"{RUN}/logs/sft.log",
    shell:
        # one node: the plugin's jobstep runs this; several nodes: one `python -m llm_bridge.sft` (one torchrun)
        # per node through srun, rendezvous on the allocation's first node
        srun_per_node("sft") + "python -m llm_bridge.sft --params {params.cfg:q} --base-model {input.base_model} --data-dir {RUN}/parquet"
        " --out-dir {RUN}/sft --log {log}" + record("sft")
