rule raw_data:
    output:
        train=f"{RUN}/raw_data/train.jsonl",
        test=f"{RUN}/raw_data/test.jsonl",
        manifest=report(f"{RUN}/manifests/raw_data.json", category="4. Stage configs and provenance", caption="../report/manifest.rst"),
    input:
        code=f"{SRC}/raw_data.py",
        # a local source is a real input: editing the file reruns everything downstream
        local=[BASE["data"]["local"]["train"], BASE["data"]["local"]["test"]] if BASE["data"]["source"] == "local" else [],
    params:
        cfg=cfg("raw_data"),
    log:
        f"{RUN}/logs/raw_data.log",
    shell:
        "python -m llm_bridge.raw_data --params {params.cfg:q} --out-dir $(dirname {output.train}) 2>&1 | tee {log}" + record("raw_data")
