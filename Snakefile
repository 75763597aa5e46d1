# llm-bridge: LLM post-training as files.
#   raw_data -> base_model -> parquet -> sft -> [ppo] -> merged_model -> evaluate (-> upload)
# Run the embedded default:   snakemake --cores 2 all
# On a SLURM cluster:         snakemake --profile slurm merged_model
# Many runs, shared stages:   snakemake --cores 2 experiment --config experiment=lr-sweep   (docs/experiments.md)
import os

from snakemake.utils import min_version

min_version("9.0")


configfile: os.path.join(workflow.basedir, "config", "config.yaml")


report: "report/workflow.rst"


include: "rules/common.smk"
include: "rules/raw_data.smk"
include: "rules/base_model.smk"
include: "rules/parquet.smk"
include: "rules/sft.smk"
include: "rules/ppo.smk"
include: "rules/merged_model.smk"
include: "rules/evaluate.smk"
include: "rules/plots.smk"
include: "rules/upload.smk"
include: "rules/compare.smk"


rule all:
    """Every run: the plain run, or with --config experiment=NAME every variant and the comparison."""
    default_target: True
    input:
        [target for run in RUNS for target in run_targets(run)],
        rules.compare.output if EXPERIMENT else [],


# The end of a run, in a few lines: the eval table, where the report and the model are, the total time.
onsuccess:
    from llm_bridge import status

    status.print_end_of_run(END_OF_RUN_DIR, time.time() - START_TIME, ok=True)


onerror:
    from llm_bridge import status

    status.print_end_of_run(END_OF_RUN_DIR, time.time() - START_TIME, ok=False)
