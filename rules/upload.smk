# The end of the chain: model card + upload receipt. Not part of `all` unless upload.enabled; run it with
#   HF_TOKEN=... snakemake --cores 2 upload        (the token only ever comes from the environment)
rule model_card:
    output:
        model=directory(f"{RUN}/upload/model"),
        manifest=report(f"{RUN}/manifests/model_card.json", category="4. Stage configs and provenance", caption="../report/manifest.rst"),
    input:
        code=f"{SRC}/model_card.py",
        model=at("merged_model", "merged_model"),
        eval=at("evaluate", "evaluate/eval.json"),
        manifest=at("merged_model", "manifests/merged_model.json"),
    params:
        cfg=cfg("model_card"),
        manifests=lambda wildcards: at("merged_model", "manifests")(wildcards),  # the chain follows shared stages from there
    log:
        f"{RUN}/logs/model_card.log",
    shell:
        "python -m llm_bridge.model_card --config-json {params.cfg:q} --model-dir {input.model} --eval {input.eval}"
        " --manifests-dir {params.manifests} --out-dir {output.model} 2>&1 | tee {log}" + record("model_card")


def upload_config(wildcards):
    return RUNS[run_of(wildcards)]["upload"]


rule upload:
    output:
        report(f"{RUN}/upload/receipt.json", category="3. Upload", caption="../report/receipt.rst"),
    input:
        code=f"{SRC}/upload.py",
        model=at("model_card", "upload/model"),
        eval=at("evaluate", "evaluate/eval.json"),
    params:
        repo=lambda wildcards: upload_repo_id(upload_config(wildcards)),
        revision=lambda wildcards: upload_config(wildcards)["revision"],
        public=lambda wildcards: "" if upload_config(wildcards).get("private", True) else "--public",
        run=lambda wildcards: f"runs/{run_of(wildcards)}",
    log:
        f"{RUN}/logs/upload.log",
    shell:
        "python -m llm_bridge.upload --model-dir {input.model} --repo-id {params.repo} --revision {params.revision}"
        " {params.public} --eval-json {input.eval} --manifest {input.model}/provenance.json --receipt {output} --run-name {params.run}"
        " 2>&1 | tee {log}"
