#!/usr/bin/env bash
# Stand up a REAL single-host SLURM cluster (Debian slurm-wlm + munge) for tests and CI.
#
#   cluster "llmbridge", partitions "cpu" (default), "debug" (10 min) and "acct" (account llmb
#   only), two virtual nodes n1, n2
#   (1 CPU and 8000 MB each, both on this host at 127.0.0.1, slurmd ports 17001/17002).
#
# Idempotent: on a running, healthy cluster it only prints the summary; daemons that died
# are restarted; a changed slurm.conf restarts all daemons. Needs root.
#
# Environment knobs (all optional):
#   LLMB_SLURM_TIMEOUT   seconds to wait for both nodes to become usable (default 90)
#   LLMB_SLURM_NODE_MEM  RealMemory per node in MB (default 8000)
#   LLMB_SLURM_QUIET=1   print nothing but errors
set -euo pipefail

CLUSTER=llmbridge
STATE_ROOT=/var/spool/slurm-llmbridge
RUN_DIR=/run/slurm-llmbridge
LOG_DIR=/var/log/slurm
CONF_DIR=/etc/slurm
CONF="$CONF_DIR/slurm.conf"
JOBCOMP_LOG="$LOG_DIR/jobcomp.log"
NODES=(n1 n2)
PORTS=(17001 17002)
NODE_MEM="${LLMB_SLURM_NODE_MEM:-8000}"
TIMEOUT="${LLMB_SLURM_TIMEOUT:-90}"
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
MARKER="# managed by llm-bridge tests/slurm/up.sh"

# a reader that goes away (`up.sh | head`) must not kill us half way
trap '' PIPE
say() { [[ "${LLMB_SLURM_QUIET:-0}" == 1 ]] || echo "[slurm-up] $*" 2>/dev/null || true; }
die() { echo "[slurm-up] ERROR: $*" >&2; exit 1; }

[[ "$(id -u)" == 0 ]] || die "must run as root (it installs packages and starts daemons)"
t0=$SECONDS

# --- helpers ---------------------------------------------------------------------------------
pid_alive() {  # pid_alive PIDFILE NAME -> 0 if the pid in PIDFILE is a live process called NAME
    local f=$1 name=$2 pid
    [[ -s "$f" ]] || return 1
    pid=$(<"$f")
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == "$name" ]]
}

munge_ok() { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }

node_states() {  # "n1 idle\nn2 idle" ('*' suffix = not responding, see man sinfo)
    sinfo -h -N -p cpu -o '%N %t' 2>/dev/null | sort -u
}

nodes_usable() {  # every node responds and is not down/drained
    local st n ok=0
    st=$(node_states) || return 1
    for n in "${NODES[@]}"; do
        grep -Eq "^$n (idle|mix|alloc|comp)-?$" <<<"$st" || return 1
        ok=$((ok + 1))
    done
    [[ $ok == "${#NODES[@]}" ]]
}

show_logs() {
    echo "----- sinfo -----" >&2
    sinfo -N -l 2>&1 | tail -n 10 >&2 || true
    local f
    for f in "$LOG_DIR/slurmctld.log" "$LOG_DIR"/slurmd-n1.log "$LOG_DIR"/slurmd-n2.log /var/log/munge/munged.log; do
        [[ -f "$f" ]] || continue
        echo "----- tail -n 25 $f -----" >&2
        tail -n 25 "$f" >&2
    done
}

# --- 1. packages -----------------------------------------------------------------------------
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null \
    || ! command -v sinfo >/dev/null || ! command -v munged >/dev/null; then
    say "installing slurm-wlm + munge (apt-get) ..."
    export DEBIAN_FRONTEND=noninteractive
    apt_install() {
        apt-get install -y -q --no-install-recommends slurm-wlm munge >/tmp/slurm-up-apt.log 2>&1
    }
    apt-get update -q >/tmp/slurm-up-apt-update.log 2>&1 || true
    if ! apt_install; then
        sleep 5
        apt-get update -q >>/tmp/slurm-up-apt-update.log 2>&1 || true
        apt_install || { tail -n 30 /tmp/slurm-up-apt.log >&2; die "apt-get install slurm-wlm munge failed"; }
    fi
    say "installed $(slurmctld -V 2>/dev/null) and $(munged -V 2>/dev/null | awk '{print $1}')"
fi

# --- 2. munge --------------------------------------------------------------------------------
getent passwd munge >/dev/null || die "user munge missing (munge package not installed properly?)"
install -d -m 0700 -o munge -g munge /etc/munge /var/lib/munge /var/log/munge
install -d -m 0755 -o munge -g munge /run/munge
KEY=/etc/munge/munge.key
if [[ ! -s "$KEY" ]] || [[ $(stat -c %s "$KEY") -lt 32 ]]; then
    dd if=/dev/urandom of="$KEY" bs=1024 count=1 status=none
fi
chown munge:munge "$KEY"
chmod 0400 "$KEY"
if ! pid_alive /run/munge/munged.pid munged || ! munge_ok; then
    say "starting munged"
    if [[ -s /run/munge/munged.pid ]]; then kill "$(cat /run/munge/munged.pid)" 2>/dev/null || true; sleep 1; fi
    rm -f /run/munge/munge.socket.2 /run/munge/munge.socket.2.lock /run/munge/munged.pid
    runuser -u munge -- /usr/sbin/munged --pid-file=/run/munge/munged.pid
    for _ in $(seq 1 50); do munge_ok && break; sleep 0.2; done
    munge_ok || { tail -n 20 /var/log/munge/munged.log >&2 || true; die "munge -n | unmunge does not succeed"; }
fi

# --- 3. slurm.conf ---------------------------------------------------------------------------
HOST=$(hostname -s)
install -d -m 0755 "$CONF_DIR" "$STATE_ROOT" "$STATE_ROOT/ctld" "$RUN_DIR" "$LOG_DIR"
for n in "${NODES[@]}"; do install -d -m 0755 "$STATE_ROOT/d-$n"; done

node_lines=""
for i in "${!NODES[@]}"; do
    node_lines+="NodeName=${NODES[$i]} NodeHostname=$HOST NodeAddr=127.0.0.1 Port=${PORTS[$i]} CPUs=1 Boards=1 SocketsPerBoard=1 CoresPerSocket=1 ThreadsPerCore=1 RealMemory=$NODE_MEM State=UNKNOWN"$'\n'
done

new_conf=$(cat <<EOF
$MARKER
# A test cluster: two virtual nodes on one host. Do not edit by hand, edit up.sh.
ClusterName=$CLUSTER
SlurmctldHost=$HOST(127.0.0.1)
SlurmctldPort=6817
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
# cred_expire also sets how long a requeued job waits before it may start again (default 120 s)
AuthInfo=cred_expire=30
CryptoType=crypto/munge
MpiDefault=none
# no cgroups in containers: plain process tracking, no task binding
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SlurmdParameters=config_overrides
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# daemons' state, pids and logs (%n = node name, one slurmd per virtual node)
StateSaveLocation=$STATE_ROOT/ctld
SlurmdSpoolDir=$STATE_ROOT/d-%n
SlurmctldPidFile=$RUN_DIR/slurmctld.pid
SlurmdPidFile=$RUN_DIR/slurmd-%n.pid
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd-%n.log
SlurmctldDebug=info
SlurmdDebug=info
# nodes come back by themselves after a restart / a daemon death
ReturnToService=2
# the pipeline submits requeueable jobs (sft/ppo)
JobRequeue=1
# no slurmdbd: finished jobs stay visible to squeue for 1 h (Snakemake's squeue status mode),
# and every finished job gets one line in the jobcomp file (tests assert on it)
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/filetxt
JobCompLoc=$JOBCOMP_LOG
MinJobAge=3600
# small jobs start fast
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2,bf_interval=2,sched_min_interval=0,batch_sched_delay=0
# a busy 2-core host (training on the same cores) must not make daemons look dead
MessageTimeout=30
SlurmdTimeout=300
SlurmctldTimeout=120
InactiveLimit=0
KillWait=30
UnkillableStepTimeout=180
Waittime=0
$node_lines
PartitionName=cpu Nodes=$(IFS=,; echo "${NODES[*]}") Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
PartitionName=debug Nodes=$(IFS=,; echo "${NODES[*]}") Default=NO MaxTime=00:10:00 State=UP OverSubscribe=NO
# a partition that only takes jobs charged to account "llmb" (as clusters that bill per project do):
# tests check that a job without that account is refused before any submission
PartitionName=acct Nodes=$(IFS=,; echo "${NODES[*]}") Default=NO MaxTime=INFINITE State=UP OverSubscribe=NO AllowAccounts=llmb
EOF
)

conf_changed=0
if [[ ! -f "$CONF" ]] || [[ "$(cat "$CONF")" != "$new_conf" ]]; then
    if [[ -f "$CONF" ]] && ! grep -qF "$MARKER" "$CONF"; then
        cp -p "$CONF" "$CONF.before-llmbridge.$(date +%s)"
        say "saved the previous $CONF (not ours) next to it"
    fi
    printf '%s\n' "$new_conf" >"$CONF.tmp"
    mv "$CONF.tmp" "$CONF"
    conf_changed=1
fi
touch "$JOBCOMP_LOG"
# node names resolve like on a real cluster (all to this host), e.g. for a torchrun rendezvous
# endpoint taken from `scontrol show hostnames "$SLURM_JOB_NODELIST"`
missing=""
for n in "${NODES[@]}"; do getent hosts "$n" >/dev/null || missing+=" $n"; done
if [[ -n "$missing" ]]; then
    if echo "127.0.0.1$missing  # llm-bridge test SLURM nodes (tests/slurm/up.sh)" >>/etc/hosts; then
        say "added 127.0.0.1$missing to /etc/hosts"
    else
        say "WARNING: could not add${missing} to /etc/hosts: node names will not resolve"
    fi
fi

# --- 4. daemons ------------------------------------------------------------------------------
ctld_pidfile="$RUN_DIR/slurmctld.pid"
slurmd_pidfile() { echo "$RUN_DIR/slurmd-$1.pid"; }

all_running() {
    pid_alive "$ctld_pidfile" slurmctld || return 1
    local n
    for n in "${NODES[@]}"; do pid_alive "$(slurmd_pidfile "$n")" slurmd || return 1; done
}

any_running() {
    pid_alive "$ctld_pidfile" slurmctld && return 0
    local n
    for n in "${NODES[@]}"; do pid_alive "$(slurmd_pidfile "$n")" slurmd && return 0; done
    return 1
}

if [[ $conf_changed == 0 ]] && all_running && nodes_usable; then
    say "already up ($((SECONDS - t0)) s)"
else
    if [[ $conf_changed == 1 ]]; then
        say "slurm.conf written: $CONF"
        # a running daemon with an older config must go (down.sh stops by pid file)
        if any_running; then
            say "config changed: restarting daemons"
            LLMB_SLURM_QUIET=1 LLMB_SLURM_KEEP_MUNGE=1 bash "$HERE/down.sh"
        fi
    fi
    if ! pid_alive "$ctld_pidfile" slurmctld; then
        say "starting slurmctld"
        rm -f "$ctld_pidfile"
        slurmctld || { show_logs; die "slurmctld did not start"; }
    fi
    # slurmd registers with slurmctld: wait until slurmctld answers
    for _ in $(seq 1 60); do scontrol ping 2>/dev/null | grep -q UP && break; sleep 0.5; done
    for n in "${NODES[@]}"; do
        if ! pid_alive "$(slurmd_pidfile "$n")" slurmd; then
            say "starting slurmd -N $n"
            rm -f "$(slurmd_pidfile "$n")"
            slurmd -N "$n" || { show_logs; die "slurmd -N $n did not start"; }
        fi
    done
    deadline=$((SECONDS + TIMEOUT))
    resumed=0
    until nodes_usable; do
        if (( SECONDS >= deadline )); then
            show_logs
            die "nodes ${NODES[*]} not usable after ${TIMEOUT}s (states: $(node_states | tr '\n' ' '))"
        fi
        # nodes drained by an earlier run (e.g. 'Kill task failed') are put back once
        if [[ $resumed == 0 ]] && node_states | grep -Eq ' (drain|drng|drained|down)[*]?$'; then
            sleep 2
            for n in "${NODES[@]}"; do
                if node_states | grep -Eq "^$n (drain|drng|drained|down)[*]?$"; then
                    scontrol update NodeName="$n" State=RESUME 2>/dev/null || true
                fi
            done
            resumed=1
        fi
        sleep 0.5
    done
    say "cluster up in $((SECONDS - t0)) s"
fi

# --- 5. summary ------------------------------------------------------------------------------
if [[ "${LLMB_SLURM_QUIET:-0}" != 1 ]]; then
  {
    echo "[slurm-up] cluster $CLUSTER: $(slurmctld -V 2>/dev/null)"
    sinfo -o '  %P %a %l %D %t %N'
    echo "[slurm-up] config     $CONF"
    echo "[slurm-up] logs       $LOG_DIR/slurmctld.log $LOG_DIR/slurmd-n{1,2}.log"
    echo "[slurm-up] job record $JOBCOMP_LOG (one line per finished job)"
    echo "[slurm-up] stop with  $HERE/down.sh"
  } 2>/dev/null || true
fi
