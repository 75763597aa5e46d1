rule sft:
    output:
        # verl's checkpoints live in sft/checkpoints (kept across a kill, so a rerun resumes);
        # result.json, written last, names the finished checkpoint and holds the loss curve.
        result=f"{RUN}/sft/result.json",
        manifest=report(f"{RUN}/manifests/sft.json", category="4. Stage configs and provenance", caption="../report/manifest.rst"),
    input:
        code=[f"{SRC}/sft.py", f"{SRC}/launch.py"],
        base_model=at("base_model", "base_model"),
        data=at("parquet", "parquet/sft_train.parquet", "parquet/sft_test.parquet"),
    params:
        cfg=cfg("sft"),
    resources:
        **slurm_resources("sft"),
    threads: all_local_cores
    log:
        f"{RUN}/logs/sft.log",
    benchmark:
        f"{RUN}/benchmarks/sft.tsv"  # wall time of the (last) attempt, for the experiment comparison
    shell:
        # one node: the plugin's jobstep runs this; several nodes: one `python -m llm_bridge.sft` (one torchrun)
        # per node through srun, rendezvous on the allocation's first node
        srun_per_node("sft") + "python -m llm_bridge.sft --params {params.cfg:q} --base-model {input.base_model} --data-dir $(dirname {input.data[0]})"
        " --out-dir $(dirname {output.result}) 2>&1 | tee {log}" + record("sft")
