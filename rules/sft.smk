rule sft:
    input:
        code=[f"{SRC}/sft.py", f"{SRC}/launch.py"],
        base_model=at("base_model", "base_model"),
        train=at("parquet", "parquet/sft_train.parquet"),
        test=at("parquet", "parquet/sft_test.parquet"),
    output:
        # verl's checkpoints live in sft/checkpoints (kept across a kill, so a rerun resumes);
        # result.json, written last, names the finished checkpoint and holds the loss curve.
        result=f"{RUN}/sft/result.json",
        manifest=stage_manifest("sft"),
    log:
        f"{RUN}/logs/sft.log",
    benchmark:
        f"{RUN}/benchmarks/sft.tsv"  # wall time of the (last) attempt, for the experiment comparison
    threads: all_local_cores
    resources:
        **slurm_resources("sft"),
    params:
        cfg=cfg("sft"),
        data_dir=lambda w, input: os.path.dirname(input.train),
        out_dir=lambda w, output: os.path.dirname(output.result),
        srun=srun_per_node("sft"),
    shell:
        # one node: the plugin's jobstep runs this; several nodes: one `python -m llm_bridge.sft` (one torchrun)
        # per node through srun, rendezvous on the allocation's first node
        "{params.srun}python -m llm_bridge.sft --params {params.cfg:q} --base-model {input.base_model}"
        " --data-dir {params.data_dir} --out-dir {params.out_dir} --log {log}"
        " && python -m llm_bridge.provenance record --rule sft --params {params.cfg:q}"
        " --inputs {input} --outputs {output} --out {output.manifest}"
