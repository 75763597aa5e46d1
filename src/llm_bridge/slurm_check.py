"""Check what the pipeline is about to submit against the SLURM cluster itself, before the first `sbatch`.

Without it, a wrong partition, a GPU count no node has or a missing account shows up one job at a time: sbatch
refuses the first job after the stages before it have run, or SLURM accepts the job and it pends forever
("PartitionTimeLimit", "account not permitted"). The workflow calls `check_jobs` from its `onstart` hook when
it runs with the SLURM executor (rules/common.smk): Snakemake has built the DAG and the executor, and has not
submitted anything yet. Every problem of every job is reported at once, with the preset key to change.

What is asked of the cluster (read-only): `scontrol show partition -o`, `sinfo -N` (CPUs, memory and GRES of
each node), `scontrol show config` (AccountingStorageEnforce) and, only where accounts are enforced and none is
given, `sacctmgr show user` (is there a default account).

    python -m llm_bridge.slurm_check          # what this cluster offers, as the check sees it
"""
from __future__ import annotations

import getpass
import math
import re
import shutil
import subprocess
from dataclasses import dataclass, field


@dataclass
class Partition:
    name: str
    default: bool = False
    state: str = "UP"
    max_time_min: float = math.inf
    max_nodes: float = math.inf
    allow_accounts: list[str] | None = None  # None: all
    deny_accounts: list[str] = field(default_factory=list)
    allow_qos: list[str] | None = None
    nodes: dict[str, dict] = field(default_factory=dict)  # node -> {cpus, mem_mb, gpus, gpu_types}

    def most(self, key: str) -> float:
        return max((n[key] for n in self.nodes.values()), default=0)


@dataclass
class Cluster:
    partitions: dict[str, Partition]
    enforce: list[str]

    @property
    def default_partition(self) -> str | None:
        return next((p.name for p in self.partitions.values() if p.default), None)


def available() -> bool:
    return shutil.which("sinfo") is not None and shutil.which("scontrol") is not None


def _run(cmd: list[str]) -> str:
    try:
        return subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        detail = getattr(exc, "stderr", "") or str(exc)
        raise RuntimeError(f"`{' '.join(cmd)}` failed: {detail.strip()}") from None


def slurm_minutes(text: str) -> float:
    """sinfo/scontrol time limits: UNLIMITED/infinite, [days-]hours:minutes:seconds, minutes:seconds, minutes."""
    text = text.strip()
    if text.upper() in ("UNLIMITED", "INFINITE", "NONE", ""):
        return math.inf
    days = 0
    if "-" in text:
        d, text = text.split("-", 1)
        days = int(d)
    parts = [int(p) for p in text.split(":")]
    if len(parts) == 3:
        h, m, s = parts
    elif len(parts) == 2:
        h, (m, s) = 0, parts
    else:
        h, m, s = 0, parts[0], 0
    return days * 1440 + h * 60 + m + s / 60


def gres_gpus(gres: str) -> tuple[int, set[str]]:
    """GPUs per node in a GRES string ('gpu:h100:8(S:0-1),mps:100' -> 8, {'h100'}); '(null)' -> 0."""
    count, types = 0, set()
    for item in gres.split(","):
        item = re.sub(r"\(.*?\)", "", item).strip()
        fields = item.split(":")
        if fields[0] != "gpu" or len(fields) < 2:
            continue
        if len(fields) == 3:
            types.add(fields[1])
        try:
            count += int(re.match(r"\d+", fields[-1]).group(0))
        except AttributeError:
            count += 1
    return count, types


def _kv(line: str) -> dict[str, str]:
    return dict(re.findall(r"(\w+)=(\S*)", line))


def query() -> Cluster:
    partitions: dict[str, Partition] = {}
    for line in _run(["scontrol", "show", "partition", "-o"]).splitlines():
        kv = _kv(line)
        if "PartitionName" not in kv:
            continue
        names = lambda v: None if v in (None, "ALL") else [a for a in v.split(",") if a]  # noqa: E731
        partitions[kv["PartitionName"]] = Partition(
            name=kv["PartitionName"], default=kv.get("Default") == "YES", state=kv.get("State", "UP"),
            max_time_min=slurm_minutes(kv.get("MaxTime", "UNLIMITED")),
            max_nodes=math.inf if kv.get("MaxNodes", "UNLIMITED") == "UNLIMITED" else int(kv["MaxNodes"]),
            allow_accounts=names(kv.get("AllowAccounts")), deny_accounts=names(kv.get("DenyAccounts")) or [],
            allow_qos=names(kv.get("AllowQos")))
    for line in _run(["sinfo", "-h", "-N", "-o", "%N|%P|%c|%m|%G"]).splitlines():
        try:
            node, part, cpus, mem, gres = line.split("|")
        except ValueError:
            continue
        part = part.rstrip("*")
        if part in partitions:
            gpus, types = gres_gpus(gres)
            partitions[part].nodes[node] = {"cpus": int(cpus.rstrip("+")), "mem_mb": int(mem.rstrip("+")), "gpus": gpus,
                                            "gpu_types": types, "gres": gres}
    enforce = []
    for line in _run(["scontrol", "show", "config"]).splitlines():
        if line.startswith("AccountingStorageEnforce"):
            enforce = [e for e in line.split("=", 1)[1].strip().split(",") if e and e != "none"]
    return Cluster(partitions, enforce)


def default_account() -> str | None:
    """The user's default account, when the accounting database answers; '' when it has none."""
    try:
        out = _run(["sacctmgr", "-n", "-P", "show", "user", getpass.getuser(), "format=DefaultAccount"])
    except RuntimeError:
        return None
    return out.strip().splitlines()[0].strip() if out.strip() else ""


def requested_gpus(res: dict) -> tuple[int, str | None]:
    """GPUs per node a job asks for: --gres=gpu[:type]:N is per node, the plugin's `gpu` (--gpus) per job."""
    gres = str(res.get("gres") or "")
    if gres:
        n, types = gres_gpus(gres)
        return n, next(iter(types), None)
    gpu = int(res.get("gpu") or res.get("gpus") or 0)
    return math.ceil(gpu / max(1, int(res.get("nodes") or 1))), res.get("gpu_model")


def check_job(rule: str, res: dict, cluster: Cluster, fix: str) -> list[str]:
    """Problems of one job's resources (the names the SLURM executor plugin reads) on this cluster."""
    problems = []
    name = res.get("slurm_partition") or cluster.default_partition
    known = ", ".join(f"{p}{' (default)' if cluster.partitions[p].default else ''}" for p in cluster.partitions)
    if not name:
        return [f"rule {rule}: no SLURM partition given and the cluster has no default partition; set slurm.partition "
                f"{fix} (partitions: {known})"]
    part = cluster.partitions.get(str(name))
    if part is None:
        return [f"rule {rule}: SLURM partition {name!r} does not exist on this cluster (partitions: {known}); set "
                f"slurm.partition {fix}"]
    where = f"rule {rule} on partition {part.name}"
    if part.state.upper() not in ("UP",):
        problems.append(f"{where}: the partition is {part.state}, it starts no jobs")
    nodes = int(res.get("nodes") or 1)
    if nodes > min(len(part.nodes), part.max_nodes):
        problems.append(f"{where}: asks for {nodes} nodes, the partition has {len(part.nodes)}"
                        f"{'' if part.max_nodes == math.inf else f' (MaxNodes={part.max_nodes})'}; lower nnodes {fix}")
    gpus, model = requested_gpus(res)
    most_gpus = part.most("gpus")
    if gpus > most_gpus:
        have = sorted({n['gres'] for n in part.nodes.values()})
        problems.append(f"{where}: asks for {gpus} GPU(s) per node, but no node of the partition has more than {most_gpus} "
                        f"(sinfo %G: {', '.join(have)}); pick a GPU partition or fewer GPUs per node {fix}")
    elif gpus and model and not any(model in n["gpu_types"] for n in part.nodes.values()):
        types = sorted({t for n in part.nodes.values() for t in n["gpu_types"]})
        problems.append(f"{where}: asks for GPU type {model!r}, the partition's GPUs are {types or 'untyped'}; fix gpu_model {fix}")
    tasks_per_node = math.ceil(int(res.get("tasks") or 1) / nodes) if res.get("mpi") else 1
    cpus = int(res.get("cpus_per_task") or 1) * tasks_per_node
    if cpus > part.most("cpus"):
        problems.append(f"{where}: asks for {cpus} CPUs per node, the partition's nodes have at most {part.most('cpus')}; "
                        f"lower cpus_per_task {fix}")
    mem = res.get("mem_mb")
    if mem and int(mem) > part.most("mem_mb"):
        problems.append(f"{where}: asks for {int(mem)} MB per node, the partition's nodes have at most {part.most('mem_mb')} MB; "
                        f"lower mem_mb {fix}")
    runtime = res.get("runtime")
    if runtime and float(runtime) > part.max_time_min:
        problems.append(f"{where}: asks for {float(runtime):.0f} min, the partition's time limit is {part.max_time_min:.0f} min "
                        f"(the job would pend forever); lower runtime or pick another partition {fix}")
    account = res.get("slurm_account")
    accounts = [a for a in re.split(r"[,\s]+", str(account or "")) if a]
    if part.allow_accounts is not None:
        if not accounts:
            problems.append(f"{where}: the partition only takes jobs charged to account(s) {', '.join(part.allow_accounts)} "
                            f"and no account is given; set slurm.account {fix}")
        elif not any(a in part.allow_accounts for a in accounts):
            problems.append(f"{where}: account {account} may not use the partition (AllowAccounts="
                            f"{','.join(part.allow_accounts)}); set slurm.account {fix}")
    if any(a in part.deny_accounts for a in accounts):
        problems.append(f"{where}: account {account} is denied on the partition (DenyAccounts={','.join(part.deny_accounts)})")
    qos = res.get("qos")
    if qos and part.allow_qos is not None and str(qos) not in part.allow_qos:
        problems.append(f"{where}: QOS {qos} is not allowed on the partition (AllowQos={','.join(part.allow_qos)}); "
                        f"set slurm.qos {fix}")
    return problems


def check_jobs(jobs: list[tuple[str, dict]], fix: str = "in the preset") -> list[str]:
    """Problems of all jobs, deduplicated (a rule's jobs share their resources)."""
    cluster = query()
    problems: list[str] = []
    for rule, res in jobs:
        for p in check_job(rule, res, cluster, fix):
            if p not in problems:
                problems.append(p)
    if "associations" in cluster.enforce and any(not r.get("slurm_account") for _, r in jobs):
        default = default_account()
        if default == "":
            problems.append(f"this cluster enforces accounts (AccountingStorageEnforce={','.join(cluster.enforce)}) and user "
                            f"{getpass.getuser()} has no default account; set slurm.account {fix}")
    return problems


def main() -> None:
    cluster = query()
    print(f"AccountingStorageEnforce: {','.join(cluster.enforce) or 'none'}")
    for p in cluster.partitions.values():
        print(f"{p.name}{' (default)' if p.default else ''}: {p.state}, {len(p.nodes)} node(s), time limit "
              f"{'none' if p.max_time_min == math.inf else f'{p.max_time_min:.0f} min'}, at most {p.most('cpus')} CPUs, "
              f"{p.most('mem_mb')} MB and {p.most('gpus')} GPU(s) per node; accounts "
              f"{','.join(p.allow_accounts) if p.allow_accounts is not None else 'all'}")


if __name__ == "__main__":
    main()
