# An experiment's comparison report, and the `experiment` target: every variant, then the report.
#   snakemake --cores 2 experiment --config experiment=lr-sweep


if EXPERIMENT:

    rule compare:
        input:
            code=f"{SRC}/compare.py",
            results=[spec[key] for spec in compare_variants().values() for key in ("sft", "ppo", "eval") if spec[key]],
        output:
            html=report(
                f"runs/{EXPERIMENT}/compare/report.html", category="5. Experiment", caption="../report/compare.rst"
            ),
            manifest=f"runs/{EXPERIMENT}/manifests/compare.json",
        log:
            f"runs/{EXPERIMENT}/logs/compare.log",
        params:
            cfg=as_json(compare_variants()),
            experiment=EXPERIMENT,
        shell:
            "python -m llm_bridge.compare --experiment {params.experiment} --variants {params.cfg:q} --out {output.html}"
            " 2>&1 | tee {log}"
            " && python -m llm_bridge.provenance record --rule compare --params {params.cfg:q}"
            " --inputs {input} --outputs {output} --out {output.manifest}"


rule experiment:
    """Every variant of --config experiment=NAME (as `all`) and the comparison report."""
    input:
        experiment_targets,
