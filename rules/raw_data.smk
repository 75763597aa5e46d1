rule raw_data:
    input:
        code=f"{SRC}/raw_data.py",
        # a local source is a real input: editing the file reruns everything downstream
        local=(
            [config["data"]["local"]["train"], config["data"]["local"]["test"]]
            if config["data"]["source"] == "local"
            else []
        ),
    output:
        train=f"{RUN}/raw_data/train.jsonl",
        test=f"{RUN}/raw_data/test.jsonl",
        manifest=stage_manifest("raw_data"),
    log:
        f"{RUN}/logs/raw_data.log",
    params:
        cfg=as_json({"data": config["data"], "seed": config["seed"]}),
        out_dir=lambda w, output: os.path.dirname(output.train),
    shell:
        "python -m llm_bridge.raw_data --params {params.cfg:q} --out-dir {params.out_dir} 2>&1 | tee {log}"
        " && python -m llm_bridge.provenance record --rule raw_data --params {params.cfg:q}"
        " --inputs {input} --outputs {output} --out {output.manifest}"
