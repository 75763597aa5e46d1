rule ppo:
    input:
        code=[f"{SRC}/ppo.py", f"{SRC}/launch.py", f"{SRC}/seeded_rollout.py"],
        sft_model=at("sft_model", "sft/model"),
        train=at("parquet", "parquet/train.parquet"),
        test=at("parquet", "parquet/test.parquet"),
    output:
        result=f"{RUN}/ppo/result.json",
        manifest=stage_manifest("ppo"),
    log:
        f"{RUN}/logs/ppo.log",
    benchmark:
        f"{RUN}/benchmarks/ppo.tsv"  # wall time of the (last) attempt, for the experiment comparison
    threads: all_local_cores
    resources:
        **slurm_resources("ppo"),
    params:
        cfg=cfg("ppo"),
        data_dir=lambda w, input: os.path.dirname(input.train),
        out_dir=lambda w, output: os.path.dirname(output.result),
    shell:
        "python -m llm_bridge.ppo --params {params.cfg:q} --sft-model {input.sft_model} --data-dir {params.data_dir}"
        " --out-dir {params.out_dir} --log {log}"
        " && python -m llm_bridge.provenance record --rule ppo --params {params.cfg:q}"
        " --inputs {input} --outputs {output} --out {output.manifest}"
