rule raw_data:
    output:
        train=f"{RUN}/raw_data/train.jsonl",
        test=f"{RUN}/raw_data/test.jsonl",
        manifest=report(f"{RUN}/manifests/raw_data.json", category="4. Stage configs and provenance", caption="../report/manifest.rst"),
    input:
        code=f"{SRC}/raw_data.py",
        # a local source is a real input: editing the file reruns everything downstream
        local=[config["data"]["local"]["train"], config["data"]["local"]["test"]] if config["data"]["source"] == "local" else [],
    params:
        cfg=as_json({"data": config["data"], "seed": config["seed"]}),
    log:
        f"{RUN}/logs/raw_data.log",
    shell:
        "python -m llm_bridge.raw_data --params {params.cfg:q} --out-dir {RUN}/raw_data 2>&1 | tee {log}" + record("raw_data")
