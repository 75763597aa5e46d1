# The end of the chain: model card + upload receipt. Not part of `all` unless upload.enabled; run it with
#   HF_TOKEN=... snakemake --cores 2 upload        (the token only ever comes from the environment)
rule model_card:
    output:
        model=directory(f"{RUN}/upload/model"),
        manifest=report(f"{RUN}/manifests/model_card.json", category="4. Stage configs and provenance", caption="../report/manifest.rst"),
    input:
        code=f"{SRC}/model_card.py",
        model=rules.merged_model.output.model,
        eval=rules.evaluate.output.eval,
        manifest=report(f"{RUN}/manifests/merged_model.json", category="4. Stage configs and provenance", caption="../report/manifest.rst"),
    params:
        cfg=as_json(config),
    log:
        f"{RUN}/logs/model_card.log",
    shell:
        "python -m llm_bridge.model_card --config-json {params.cfg:q} --model-dir {input.model} --eval {input.eval}"
        " --manifests-dir {RUN}/manifests --out-dir {output.model} 2>&1 | tee {log}" + record("model_card")


rule upload:
    output:
        report(f"{RUN}/upload/receipt.json", category="3. Upload", caption="../report/receipt.rst"),
    input:
        code=f"{SRC}/upload.py",
        model=rules.model_card.output.model,
        eval=rules.evaluate.output.eval,
    params:
        repo=lambda w: upload_repo_id(),
        revision=config["upload"]["revision"],
        public="" if config["upload"].get("private", True) else "--public",
    log:
        f"{RUN}/logs/upload.log",
    shell:
        "python -m llm_bridge.upload --model-dir {input.model} --repo-id {params.repo} --revision {params.revision}"
        " {params.public} --eval-json {input.eval} --manifest {input.model}/provenance.json --receipt {output} --run-name {RUN}"
        " 2>&1 | tee {log}"
