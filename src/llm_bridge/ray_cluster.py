"""A Ray cluster inside the job's own SLURM allocation, for verl's PPO (`verl.trainer.main_ppo`).

    alloc = ray_cluster.allocation()                      # nodes of this job (scontrol), this node first
    with ray_cluster.RayCluster(alloc, env, num_cpus=16, num_gpus=8, log_dir=out / "ray") as cluster:
        run main_ppo with +ray_kwargs.ray_init.address={cluster.address}

The head runs on the node this code runs on (the first node of the allocation, where SLURM starts the batch
script), one worker on each other node through `srun --overlap` (no ssh, no hand-written node lists). Every
port is derived from the job id and the node's index in the allocation, so two jobs that share a node, or two
"nodes" that share a host (the CI cluster), do not clash; the dashboard is off. Each node keeps its files in
its own temp dir (/tmp/ray-llmb-<job>), so no `ray.init()` elsewhere on the machine finds this cluster through
/tmp/ray/ray_current_cluster. `__enter__` returns once every node has joined (bounded wait, an error that names
the missing nodes and where their log is). Ray is stopped on every exit path (normal, exception, SIGTERM from
`scancel`/preemption/requeue, Ctrl-C): the worker step and the head get SIGTERM (`ray start --block` then
stops its own processes), and on every node the processes that carry this job's marker in their environment
are killed. Not `ray stop`: it kills every Ray process on the machine, including another job's.

CLI, run by the launcher through srun on the other nodes:
    python -m llm_bridge.ray_cluster worker --head IP:PORT --hosts n1,n2 --job-id 42 --num-cpus 16 --num-gpus 1 --temp-dir DIR
    python -m llm_bridge.ray_cluster kill --job-id 42      # this job's Ray processes on this node
    python -m llm_bridge.ray_cluster ports --job-id 42 --nnodes 2
"""
from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from llm_bridge.errors import InputError

MARKER = "LLMB_RAY_CLUSTER"  # environment variable carried by every process of one job's Ray cluster
# Ports: Ray's own defaults (6379, 8265, 10001, 10002-19999) stay free for a plain `ray.init()` beside us;
# torchrun's rendezvous (llm_bridge.launch.rendezvous) uses 29500-31499; all below Linux's ephemeral range.
PORT_BASE = 20000
PORT_END = 29500
PORTS_PER_NODE = 250  # 10 fixed ports + 240 for worker processes
FIXED = ("gcs", "node_manager", "object_manager", "runtime_env_agent", "dashboard_agent_grpc",
         "dashboard_agent_listen", "metrics_export", "ray_client_server")


@dataclass(frozen=True)
class NodePorts:
    gcs: int
    node_manager: int
    object_manager: int
    runtime_env_agent: int
    dashboard_agent_grpc: int
    dashboard_agent_listen: int
    metrics_export: int
    ray_client_server: int
    min_worker: int
    max_worker: int


def node_ports(job_id: int, node_index: int, nnodes: int) -> NodePorts:
    """The ports of node `node_index` of job `job_id`: one block of PORTS_PER_NODE per node, the job's blocks
    at a slot chosen by the job id. Jobs whose ids differ by less than the number of slots never clash."""
    slots = max(1, (PORT_END - PORT_BASE) // (PORTS_PER_NODE * nnodes))
    start = PORT_BASE + (job_id % slots) * PORTS_PER_NODE * nnodes + node_index * PORTS_PER_NODE
    fixed = {name: start + i for i, name in enumerate(FIXED)}
    return NodePorts(**fixed, min_worker=start + 10, max_worker=start + PORTS_PER_NODE - 1)


def ray_start_args(ports: NodePorts, num_cpus: int | None, num_gpus: int | None, temp_dir: Path, head: bool) -> list[str]:
    """None: let Ray count the node's CPUs/GPUs itself."""
    args = ["--block", "--disable-usage-stats", f"--temp-dir={temp_dir}",
            *([f"--num-cpus={num_cpus}"] if num_cpus is not None else []), *([f"--num-gpus={num_gpus}"] if num_gpus is not None else []),
            f"--node-manager-port={ports.node_manager}", f"--object-manager-port={ports.object_manager}",
            f"--runtime-env-agent-port={ports.runtime_env_agent}", f"--dashboard-agent-grpc-port={ports.dashboard_agent_grpc}",
            f"--dashboard-agent-listen-port={ports.dashboard_agent_listen}", f"--metrics-export-port={ports.metrics_export}",
            f"--min-worker-port={ports.min_worker}", f"--max-worker-port={ports.max_worker}"]
    if head:
        args += ["--head", f"--port={ports.gcs}", f"--ray-client-server-port={ports.ray_client_server}", "--include-dashboard=false"]
    return args


def ray_executable() -> str:
    found = Path(sys.executable).with_name("ray")
    return str(found) if found.exists() else (shutil.which("ray") or "ray")


def ray_env(env: dict[str, str], job_id: int) -> dict[str, str]:
    """The environment of `ray start` (and so of every Ray worker on that node): the training environment
    (verl's CPU support, NCCL settings, ...) plus this job's marker. Token authentication is on, with a token
    made for this cluster (RAY_AUTH_TOKEN, passed on through the environment, never on a command line): on a
    shared node nobody else can submit work to it, and Ray's default token file ~/.ray/auth_token (shared by
    every cluster of the user) plays no part."""
    out = {**env, MARKER: str(job_id), "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0", "RAY_USAGE_STATS_ENABLED": "0",
           "RAY_AUTH_MODE": "token"}
    out.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(32))
    return out


# --- the allocation ------------------------------------------------------------------------------------------
@dataclass
class Allocation:
    job_id: int
    hosts: list[str]  # this node (the head) first

    @property
    def nnodes(self) -> int:
        return len(self.hosts)


def _scontrol(*args: str) -> str:
    return subprocess.run(["scontrol", *args], check=True, capture_output=True, text=True, timeout=60).stdout


def allocation() -> Allocation:
    """This job's nodes, from SLURM itself. Inside a rule with `mpi="srun"` the SLURM executor's jobstep plugin
    strips SLURM_JOB_NODELIST / SLURM_NNODES from the environment, so the node list comes from
    `scontrol show job` when it is missing, and is expanded with `scontrol show hostnames`."""
    if "SLURM_JOB_ID" not in os.environ:
        raise InputError("not inside a SLURM job (no SLURM_JOB_ID): a Ray cluster over several nodes needs a SLURM "
                         "allocation; run with `snakemake --profile slurm ...`")
    job_id = int(os.environ["SLURM_JOB_ID"])
    nodelist = os.environ.get("SLURM_JOB_NODELIST")
    batch_host = None
    if not nodelist or "SLURMD_NODENAME" not in os.environ:
        info = _scontrol("show", "job", "-o", str(job_id))
        nodelist = nodelist or re.search(r"(?:^|\s)NodeList=(\S+)", info).group(1)
        found = re.search(r"(?:^|\s)BatchHost=(\S+)", info)
        batch_host = found.group(1) if found else None
    hosts = _scontrol("show", "hostnames", nodelist).split()
    here = os.environ.get("SLURMD_NODENAME") or batch_host or hosts[0]
    if here in hosts:
        hosts.remove(here)
    return Allocation(job_id=job_id, hosts=[here, *hosts])


def node_ip(host: str | None = None) -> str:
    """The address Ray uses for this node (Ray's own choice), or the address a host name resolves to."""
    if host is None:
        from ray._private.services import get_node_ip_address

        return get_node_ip_address()
    return socket.gethostbyname(host)


# --- the cluster ---------------------------------------------------------------------------------------------
class RayClusterError(RuntimeError):
    pass


class RayCluster:
    """Head here, workers through srun, all joined on `__enter__`; everything stopped on `__exit__`."""

    def __init__(self, alloc: Allocation, env: dict[str, str], num_cpus: int | None, num_gpus: int | None, log_dir: Path,
                 join_timeout: float = 300, srun_extra: list[str] | None = None):
        self.alloc, self.num_cpus, self.num_gpus = alloc, num_cpus, num_gpus
        self.env = ray_env(env, alloc.job_id)
        # this process queries the GCS (and main_ppo connects) with the same token
        for key in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN"):
            os.environ[key] = self.env[key]
        self.log_dir = Path(log_dir)
        self.join_timeout = join_timeout
        self.srun_extra = list(srun_extra or [])
        self.temp_dir = temp_root(alloc.job_id)
        self.head_ports = node_ports(alloc.job_id, 0, alloc.nnodes)
        self.head_ip = node_ip()
        self.address = f"{self.head_ip}:{self.head_ports.gcs}"
        self._head: subprocess.Popen | None = None
        self._workers: subprocess.Popen | None = None
        self._previous: dict = {}
        self._logs: list = []
        self._stopped = False

    # -- lifecycle --
    def __enter__(self) -> "RayCluster":
        self._previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def _on_signal(self, signum, _frame):
        print(f"[ray-cluster] signal {signum}: stopping Ray on {','.join(self.alloc.hosts)}", flush=True)
        raise SystemExit(128 + signum)

    def start(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        hosts = self.alloc.hosts
        print(f"[ray-cluster] job {self.alloc.job_id}: head on {hosts[0]} ({self.address}), workers on "
              f"{','.join(hosts[1:]) or 'none'}; {self.num_cpus} CPUs + {self.num_gpus} GPUs per node; logs in {self.log_dir}",
              flush=True)
        self._kill_everywhere("leftovers of an earlier run of this job (requeue)")
        head_log = (self.log_dir / "head.log").open("a")
        self._logs.append(head_log)
        self._head = subprocess.Popen([ray_executable(), "start", *ray_start_args(self.head_ports, self.num_cpus, self.num_gpus,
                                                                                  self.temp_dir / "0", head=True)],
                                      env=self.env, stdout=head_log, stderr=subprocess.STDOUT, start_new_session=True)
        self._wait_for_gcs()
        if len(hosts) > 1:
            others = hosts[1:]
            cmd = self._srun(others, self.srun_extra) + [sys.executable, "-m", "llm_bridge.ray_cluster", "worker", "--head", self.address,
                                        "--hosts", ",".join(hosts), "--job-id", str(self.alloc.job_id),
                                        "--temp-dir", str(self.temp_dir),
                                        *(["--num-cpus", str(self.num_cpus)] if self.num_cpus is not None else []),
                                        *(["--num-gpus", str(self.num_gpus)] if self.num_gpus is not None else [])]
            worker_log = (self.log_dir / "workers.log").open("a")
            self._logs.append(worker_log)
            self._workers = subprocess.Popen(cmd, env=self.env, stdout=worker_log, stderr=subprocess.STDOUT,
                                             start_new_session=True)
        self._wait_for_nodes()

    @staticmethod
    def _srun(hosts: list[str], extra: list[str] | None = None) -> list[str]:
        """A step on `hosts`, one task each, sharing the allocation with the other steps (--overlap); --label
        prefixes each line with the task number. `extra`: e.g. the GPUs of the worker step."""
        return ["srun", f"--nodes={len(hosts)}", f"--ntasks={len(hosts)}", "--ntasks-per-node=1", f"--nodelist={','.join(hosts)}",
                "--overlap", "--label", "--kill-on-bad-exit=0", *(extra or [])]

    def _wait_for_gcs(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._head.poll() is not None:
                raise RayClusterError(f"`ray start --head` on {self.alloc.hosts[0]} exited ({self._head.returncode}) before "
                                      f"its GCS answered on {self.address}. {self._tail(self.log_dir / 'head.log')}")
            try:
                with socket.create_connection((self.head_ip, self.head_ports.gcs), timeout=2):
                    return
            except OSError:
                time.sleep(0.5)
        raise RayClusterError(f"the Ray head's GCS on {self.address} did not answer within {timeout:.0f} s. "
                              f"{self._tail(self.log_dir / 'head.log')}")

    def alive_nodes(self) -> list[dict]:
        from ray._raylet import GcsClient

        infos = GcsClient(address=self.address).get_all_node_info(timeout=10)
        nodes = []
        for info in infos.values():
            if info.state == 0:  # ALIVE
                nodes.append({"node_id": info.node_id.hex(), "ip": info.node_manager_address,
                              "port": info.node_manager_port, "resources": dict(info.resources_total)})
        return nodes

    def _wait_for_nodes(self) -> None:
        """Until every node of the allocation has a live raylet (told apart by its node-manager port, since
        nodes may share an address)."""
        expected = {node_ports(self.alloc.job_id, i, self.alloc.nnodes).node_manager: host
                    for i, host in enumerate(self.alloc.hosts)}
        deadline = time.monotonic() + self.join_timeout
        joined: set[int] = set()
        error = ""
        while time.monotonic() < deadline:
            try:
                joined = {n["port"] for n in self.alive_nodes()} & set(expected)
                error = ""
            except Exception as exc:  # GCS still starting
                error = f" (last GCS query error: {exc})"
            if len(joined) == len(expected):
                print(f"[ray-cluster] all {len(expected)} nodes joined: {', '.join(expected.values())}", flush=True)
                return
            if self._head.poll() is not None:
                raise RayClusterError(f"the Ray head on {self.alloc.hosts[0]} exited ({self._head.returncode}) while waiting "
                                      f"for the nodes. {self._tail(self.log_dir / 'head.log')}")
            if self._workers is not None and self._workers.poll() is not None:
                missing = [h for p, h in expected.items() if p not in joined]
                raise RayClusterError(f"the Ray worker step (srun) exited ({self._workers.returncode}) before node(s) "
                                      f"{', '.join(missing)} joined the head at {self.address}. {self._tail(self.log_dir / 'workers.log')}")
            time.sleep(1)
        missing = [h for p, h in expected.items() if p not in joined]
        raise RayClusterError(f"after {self.join_timeout:.0f} s, node(s) {', '.join(missing)} of job {self.alloc.job_id} had not "
                              f"joined the Ray head at {self.address} ({len(joined)} of {len(expected)} joined){error}. "
                              f"Worker log: {self.log_dir / 'workers.log'}. {self._tail(self.log_dir / 'workers.log')}")

    @staticmethod
    def _tail(path: Path, lines: int = 8) -> str:
        try:
            text = path.read_text(errors="replace").strip().splitlines()[-lines:]
        except OSError:
            return ""
        return "Last lines of " + str(path) + ":\n    " + "\n    ".join(text) if text else ""

    def stop(self) -> None:
        """Idempotent. SIGTERM to the worker step and the head (ray start --block stops its processes), then
        SIGKILL what is left, then a sweep for this job's marker on every node. Signals that arrive meanwhile
        (a second scancel) do not interrupt the cleanup."""
        if self._stopped:
            return
        self._stopped = True
        ignored = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            for proc in (self._workers, self._head):
                if proc is not None and proc.poll() is None:
                    try:
                        os.killpg(proc.pid, signal.SIGTERM)
                    except ProcessLookupError:
                        pass
            for proc in (self._workers, self._head):
                if proc is None:
                    continue
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    try:
                        os.killpg(proc.pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                    proc.wait()
            self._kill_everywhere("stopping")
            shutil.rmtree(self.temp_dir, ignore_errors=True)
            for log in self._logs:
                log.close()
            print(f"[ray-cluster] Ray stopped on {','.join(self.alloc.hosts)}", flush=True)
        finally:
            for sig, handler in {**ignored, **self._previous}.items():
                if handler is not None:
                    signal.signal(sig, handler)

    def _kill_everywhere(self, why: str) -> None:
        """Kill the processes carrying this job's marker: here, and on the other nodes through srun."""
        killed = kill_marked(self.alloc.job_id)
        if killed:
            print(f"[ray-cluster] {why}: killed {len(killed)} process(es) of job {self.alloc.job_id} on {self.alloc.hosts[0]}",
                  flush=True)
        others = self.alloc.hosts[1:]
        if others:
            cmd = self._srun(others) + [sys.executable, "-m", "llm_bridge.ray_cluster", "kill", "--job-id", str(self.alloc.job_id)]
            clean = {k: v for k, v in self.env.items() if k != MARKER}
            try:
                out = subprocess.run(cmd, env=clean, capture_output=True, text=True, timeout=120)
                for line in out.stdout.splitlines():
                    if "killed" in line:
                        print(f"[ray-cluster] {why}: {line}", flush=True)
                if out.returncode != 0:
                    print(f"[ray-cluster] warning: the cleanup step on {','.join(others)} exited {out.returncode}: "
                          f"{out.stderr.strip()[-300:]}", flush=True)
            except subprocess.TimeoutExpired:
                print(f"[ray-cluster] warning: the cleanup step on {','.join(others)} did not finish in 120 s", flush=True)


def temp_root(job_id: int | str) -> Path:
    """Ray's files of this job on a node: <root>/<node index>/session_*/ (own folder per node, also when nodes
    share a host: each node's log monitor then forwards only its own workers' output)."""
    return Path(os.environ.get("LLMB_RAY_TMPDIR", "/tmp")) / f"ray-llmb-{job_id}"


def marked_processes(job_id: int | str) -> list[int]:
    """Pids on this machine whose environment carries this job's marker (never this process or its parents)."""
    needle = f"{MARKER}={job_id}".encode() + b"\0"
    spared = set()
    pid = os.getpid()
    while pid > 1:
        spared.add(pid)
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            break
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in spared:
            continue
        try:
            if needle in (entry / "environ").read_bytes() + b"\0":
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def kill_marked(job_id: int | str, grace: float = 10) -> list[int]:
    pids = marked_processes(job_id)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(_alive(p) for p in pids):
            time.sleep(0.2)
        if not any(_alive(p) for p in pids):
            break
    return pids


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


# --- CLI (runs on the other nodes, through srun) ----------------------------------------------------------------
def _worker(args) -> None:
    hosts = args.hosts.split(",")
    me = os.environ.get("SLURMD_NODENAME") or socket.gethostname()
    if me not in hosts:
        raise InputError(f"this node {me!r} is not one of the allocation's nodes {hosts}")
    index = hosts.index(me)
    ports = node_ports(args.job_id, index, len(hosts))
    cmd = [ray_executable(), "start", f"--address={args.head}",
           *ray_start_args(ports, args.num_cpus, args.num_gpus, Path(args.temp_dir) / str(index), head=False)]
    print(f"[ray-cluster] {me}: {' '.join(cmd)}", flush=True)
    os.execvpe(cmd[0], cmd, ray_env(dict(os.environ), args.job_id))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    w = sub.add_parser("worker", help="start this node's Ray worker and block (run through srun)")
    w.add_argument("--head", required=True)
    w.add_argument("--hosts", required=True)
    w.add_argument("--job-id", required=True, type=int)
    w.add_argument("--num-cpus", type=int)
    w.add_argument("--num-gpus", type=int)
    w.add_argument("--temp-dir", required=True)
    k = sub.add_parser("kill", help="kill this job's Ray processes on this node")
    k.add_argument("--job-id", required=True)
    p = sub.add_parser("ports", help="print the ports of each node of a job")
    p.add_argument("--job-id", required=True, type=int)
    p.add_argument("--nnodes", required=True, type=int)
    args = parser.parse_args(argv)
    if args.command == "worker":
        _worker(args)
    elif args.command == "kill":
        pids = kill_marked(args.job_id)
        shutil.rmtree(temp_root(args.job_id), ignore_errors=True)
        node = os.environ.get("SLURMD_NODENAME") or socket.gethostname()
        print(f"{node}: killed {len(pids)} process(es) of job {args.job_id}" if pids else f"{node}: nothing left of job {args.job_id}")
    else:
        print(json.dumps([asdict(node_ports(args.job_id, i, args.nnodes)) for i in range(args.nnodes)], indent=1))


if __name__ == "__main__":
    from llm_bridge.errors import run_main

    run_main(main)
