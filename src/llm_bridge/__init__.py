"""llm-bridge: LLM post-training pipeline on verl + Snakemake."""
