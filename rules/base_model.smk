rule base_model:
    output:
        model=directory(f"{RUN}/base_model"),
        manifest=report(f"{RUN}/manifests/base_model.json", category="4. Stage configs and provenance", caption="../report/manifest.rst"),
    input:
        code=f"{SRC}/base_model.py",
        train=at("raw_data", "raw_data/train.jsonl"),  # the tiny model's tokenizer is trained on it
    params:
        cfg=cfg("base_model"),
    log:
        f"{RUN}/logs/base_model.log",
    shell:
        "python -m llm_bridge.base_model --params {params.cfg:q} --raw-dir $(dirname {input.train}) --out-dir {output.model} 2>&1 | tee {log}" + record("base_model")
