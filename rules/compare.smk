# An experiment's comparison report, and the `experiment` target: every variant, then the report.
#   snakemake --cores 2 experiment --config experiment=lr-sweep


def compare_variants(wildcards=None):
    """Per variant: its config and where its SFT, PPO and evaluation results are (shared stages: another
    variant's folder); the benchmark files are not inputs (Snakemake writes them beside the outputs)."""
    out = {}
    for run, run_config in RUNS.items():
        w = {"run": run}
        out[run] = {
            "config": run_config,
            "sft": at("sft", "sft/result.json")(w),
            "eval": at("evaluate", "evaluate/eval.json")(w),
            "ppo": at("ppo", "ppo/result.json")(w) if PPO else None,
            "benchmarks": {s: at(s, f"benchmarks/{s}.tsv")(w) for s in {"sft", LAST_TRAINED}},
        }
    return out


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
        lambda wildcards: rules.all.input if EXPERIMENT else experiment_missing(),


def experiment_missing():
    raise WorkflowError(
        "the target `experiment` needs an experiment: snakemake --cores 2 experiment --config experiment=NAME "
        "(experiments/NAME.yaml; docs/experiments.md)"
    )
