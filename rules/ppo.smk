rule ppo:
    output:
        result=f"{RUN}/ppo/result.json",
        manifest=report(f"{RUN}/manifests/ppo.json", category="4. Stage configs and provenance", caption="../report/manifest.rst"),
    input:
        code=[f"{SRC}/ppo.py", f"{SRC}/launch.py"],
        sft_model=at("sft_model", "sft/model"),
        data=at("parquet", "parquet/train.parquet", "parquet/test.parquet"),
    params:
        cfg=cfg("ppo"),
    resources:
        **slurm_resources("ppo"),
    threads: all_local_cores
    log:
        f"{RUN}/logs/ppo.log",
    benchmark:
        f"{RUN}/benchmarks/ppo.tsv"  # wall time of the (last) attempt, for the experiment comparison
    shell:
        "python -m llm_bridge.ppo --params {params.cfg:q} --sft-model {input.sft_model} --data-dir $(dirname {input.data[0]})"
        " --out-dir $(dirname {output.result}) 2>&1 | tee {log}" + record("ppo")
