"""Snakemake's own standards for the workflow files: `snakemake --lint` finds nothing but the one documented
exception (docs/environments.md), and snakefmt (the version pyproject.toml pins) leaves the Snakefile and rules/
as they are. Fast: parsing only, no job runs."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, SNAKEMAKE

WORKFLOW_FILES = ["Snakefile", "rules"]
# The one finding the workflow keeps on purpose: every rule runs in the project's one locked environment
# (requirements/lock-cpu.txt or pixi), not in a conda env or container of its own. See docs/environments.md.
ONE_ENVIRONMENT = "Specify a conda environment or container for each rule."

# `snakemake --lint json` is not used: Snakemake 9.27.1's command line prints text all the same (cli.py calls
# workflow_api.lint() without json=True), and the API's JSON fails on a Snakefile-level finding (a
# LocalSourceFile is not JSON serializable). The text form is one line per finding: "    * <title>:".
SECTION = re.compile(r"^Lints for (.+):$")
FINDING = re.compile(r"^    \* (.+):$")


def lint_findings(snakefile: Path, workdir: Path) -> list[tuple[str, str]]:
    """(where, title) of every finding of `snakemake --lint` on the workflow `snakefile`."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO / "src"), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run(SNAKEMAKE + ["--lint", "-s", str(snakefile), "--directory", str(workdir)],
                          check=False, capture_output=True, text=True, env=env, timeout=300)
    text = proc.stdout + proc.stderr
    clean = "Congratulations, your workflow is in a good condition!" in text
    assert (proc.returncode == 0 and clean) or (proc.returncode == 1 and "Lints for " in text), \
        f"snakemake --lint did not lint (exit {proc.returncode}):\n{text[-3000:]}"
    found, where = [], None
    for line in text.splitlines():
        if m := SECTION.match(line):
            where = m.group(1)
        elif (m := FINDING.match(line)) and where:
            found.append((where, m.group(1)))
    return found


def snakefmt(*args: str | Path, cwd: Path = REPO) -> subprocess.CompletedProcess:
    # --config: the repository's [tool.snakefmt] (line length 120) also for files outside the repository
    cmd = [Path(sys.executable).with_name("snakefmt"), "--config", REPO / "pyproject.toml", *args]
    return subprocess.run([str(c) for c in cmd], check=False, capture_output=True, text=True, cwd=cwd, timeout=120)


def test_snakemake_lint_finds_only_the_documented_exception(tmp_path):
    findings = lint_findings(REPO / "Snakefile", tmp_path)
    assert any(w.startswith("rule sft ") and t == ONE_ENVIRONMENT for w, t in findings), f"the linter did not see the workflow's rules: {findings}"
    others = [f"{where}: {title}" for where, title in findings if title != ONE_ENVIRONMENT]
    assert not others, "snakemake --lint findings (fix them; the only accepted one is documented in " \
        "docs/environments.md):\n  " + "\n  ".join(others)


def test_lint_check_reports_what_the_workflow_fixed(tmp_path):
    """The two kinds of finding issue 16 removed from rules/ are still caught by the check above."""
    (tmp_path / "Snakefile").write_text(
        'RUN = "runs/x"\n\n\n'
        "rule a:\n"
        '    output:\n        f"{RUN}/a.txt",\n'
        '    log:\n        f"{RUN}/a.log",\n'
        '    shell:\n        "touch {RUN}/a.txt 2> {log}" + RUN\n'
    )
    titles = {title for _, title in lint_findings(tmp_path / "Snakefile", tmp_path)}
    assert "Shell command directly uses variable RUN from outside of the rule" in titles, titles
    assert any(t.startswith("Path composition with '+'") for t in titles), titles


def test_workflow_files_are_snakefmt_formatted():
    proc = snakefmt("--check", *WORKFLOW_FILES)
    if proc.returncode != 0:
        diff = snakefmt("--diff", *WORKFLOW_FILES).stdout
        pytest.fail(f"snakefmt would change the workflow files; run `snakefmt {' '.join(WORKFLOW_FILES)}`:\n"
                    f"{proc.stderr}\n{diff[-4000:]}")


def test_snakefmt_check_fails_on_an_unformatted_rule(tmp_path):
    rules = tmp_path / "rules"
    rules.mkdir()
    # snakefmt's style puts input before output: the real rule with its two blocks swapped is unformatted
    text = (REPO / "rules" / "raw_data.smk").read_text()
    inputs, rest = text.split("    output:", 1)
    outputs, tail = rest.split("    log:", 1)
    head, input_block = inputs.split("    input:", 1)
    (rules / "raw_data.smk").write_text(f"{head}    output:{outputs}    input:{input_block}    log:{tail}")
    proc = snakefmt("--check", "rules", cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    assert "1 file(s) would be changed" in proc.stderr
