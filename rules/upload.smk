# The end of the chain: model card + upload receipt. Not part of `all` unless upload.enabled; run it with
#   HF_TOKEN=... snakemake --cores 2 upload        (the token only ever comes from the environment)
rule model_card:
    input:
        code=f"{SRC}/model_card.py",
        model=rules.merged_model.output.model,
        eval=rules.evaluate.output.eval,
        manifest=rules.merged_model.output.manifest,
    output:
        model=directory(f"{RUN}/upload/model"),
        manifest=stage_manifest("model_card"),
    log:
        f"{RUN}/logs/model_card.log",
    params:
        cfg=as_json(config),
        manifests_dir=lambda w, input: os.path.dirname(input.manifest),
    shell:
        "python -m llm_bridge.model_card --config-json {params.cfg:q} --model-dir {input.model} --eval {input.eval}"
        " --manifests-dir {params.manifests_dir} --out-dir {output.model} 2>&1 | tee {log}"
        " && python -m llm_bridge.provenance record --rule model_card --params {params.cfg:q}"
        " --inputs {input} --outputs {output} --out {output.manifest}"


rule upload:
    input:
        code=f"{SRC}/upload.py",
        model=rules.model_card.output.model,
        eval=rules.evaluate.output.eval,
    output:
        report(f"{RUN}/upload/receipt.json", category="3. Upload", caption="../report/receipt.rst"),
    log:
        f"{RUN}/logs/upload.log",
    params:
        repo=lambda w: upload_repo_id(),
        revision=config["upload"]["revision"],
        public="" if config["upload"].get("private", True) else "--public",
        run_name=config["run_name"],
    shell:
        "python -m llm_bridge.upload --model-dir {input.model} --repo-id {params.repo} --revision {params.revision}"
        " {params.public} --eval-json {input.eval} --manifest {input.model}/provenance.json --receipt {output}"
        " --run-name {params.run_name}"
        " 2>&1 | tee {log}"
