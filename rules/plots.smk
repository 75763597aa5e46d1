rule plots:
    """Curves and tables for `snakemake --report report.html`."""
    input:
        code=f"{SRC}/plots.py",
        sft=f"{RUN}/sft/result.json",
        ppo=f"{RUN}/ppo/result.json" if PPO else [],
        eval=rules.evaluate.output.eval,
    output:
        sft=report(f"{RUN}/report/sft_loss.svg", category="1. Training", caption="../report/sft_loss.rst"),
        ppo=(
            report(f"{RUN}/report/ppo_curves.svg", category="1. Training", caption="../report/ppo_curves.rst")
            if PPO
            else []
        ),
        table=report(f"{RUN}/report/eval_table.html", category="2. Evaluation", caption="../report/eval_table.rst"),
        manifest=stage_manifest("plots"),
    log:
        f"{RUN}/logs/plots.log",
    params:
        cfg="{}",
        ppo=f"--ppo {RUN}/ppo/result.json" if PPO else "",
        out_dir=lambda w, output: os.path.dirname(output.table),
    shell:
        "python -m llm_bridge.plots --sft {input.sft} {params.ppo} --eval {input.eval} --out-dir {params.out_dir} 2>&1 | tee {log}"
        " && python -m llm_bridge.provenance record --rule plots --params {params.cfg:q}"
        " --inputs {input} --outputs {output} --out {output.manifest}"
