#!/usr/bin/env bash
# Bring up a real SLURM cluster of SLURM_CI_NODES nodes (default 2: n1, n2) on this one machine
# (root, Debian/Ubuntu), for the CI runs of `snakemake --profile slurm`. Facts behind each step:
# ../shared/SLURM_LOCAL.md ("Two nodes on one machine").
#   .ci/slurm_up.sh        # ~10 s when the packages are cached; sinfo then shows n[1-2] idle
# Each node is its own slurmd (`slurmd -N n1`, own Port=, spool, pid and log), all on
# 127.0.0.1. Each advertises SLURM_CI_GPUS fake GPUs (gres gpu:fake, no device file) and
# SLURM_CI_CPUS CPUs (more than the machine has: SlurmdParameters=config_overrides), so a
# 2 nodes x 2 "GPUs" job schedules on a 2-core machine; jobs still run on the CPU, where a
# job's GPU count becomes that many gloo processes (vcr.launch).
set -euo pipefail

if [[ $(id -u) -ne 0 ]]; then
    echo "slurm_up.sh: needs root (apt-get, daemons)" >&2
    exit 1
fi
nodes=${SLURM_CI_NODES:-2}
cpus=${SLURM_CI_CPUS:-4}
gpus=${SLURM_CI_GPUS:-4}
mem_mb=${SLURM_CI_MEM_MB:-8000}

if pgrep -x slurmctld >/dev/null || pgrep -x slurmd >/dev/null; then
    echo "slurm_up.sh: a slurmctld/slurmd is already running (someone else's cluster?);" \
        "stop it first (.ci/slurm_down.sh stops the one this script started)" >&2
    exit 1
fi

if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null \
    || ! command -v sbatch >/dev/null || ! command -v munged >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends slurmctld slurmd slurm-client munge >/dev/null
fi

host=$(hostname -s)

# munge (authentication); the package made the key
mkdir -p /run/munge && chown munge:munge /run/munge
if ! pgrep -u munge -x munged >/dev/null; then
    runuser -u munge -- /usr/sbin/munged
fi

# A fresh state every time: job ids restart at 1 and no node of an earlier layout lingers.
rm -rf /var/lib/slurm/slurmctld /var/lib/slurm/slurmd
mkdir -p /etc/slurm /var/lib/slurm/slurmctld /var/log/slurm
node_lines="" names=()
for i in $(seq 1 "$nodes"); do
    names+=("n$i")
    mkdir -p "/var/lib/slurm/slurmd/n$i"
    node_lines+="NodeName=n$i NodeHostname=${host} NodeAddr=127.0.0.1 Port=$((17000 + i))"
    node_lines+=" CPUs=${cpus} RealMemory=${mem_mb} Gres=gpu:fake:${gpus} State=UNKNOWN"$'\n'
done
chown -R slurm:slurm /var/lib/slurm /var/log/slurm 2>/dev/null || true
cat >/etc/slurm/slurm.conf <<CONF
ClusterName=ci
SlurmctldHost=${host}(127.0.0.1)
SlurmUser=slurm
AuthType=auth/munge
StateSaveLocation=/var/lib/slurm/slurmctld
SlurmdSpoolDir=/var/lib/slurm/slurmd/%n
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.%n.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.%n.log
SlurmdParameters=config_overrides
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
ReturnToService=2
EnforcePartLimits=ALL
MinJobAge=3600
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
GresTypes=gpu
${node_lines}PartitionName=main Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
CONF
# The fake GPUs need device files (a gpu gres without File= is counted as 0): copies of
# /dev/null, one per GPU index.
mkdir -p /run/slurm_ci_gpu
for g in $(seq 0 $((gpus - 1))); do
    [[ -e /run/slurm_ci_gpu/gpu$g ]] || mknod /run/slurm_ci_gpu/gpu$g c 1 3
done
cat >/etc/slurm/gres.conf <<CONF
AutoDetect=off
NodeName=n[1-${nodes}] Name=gpu Type=fake File=/run/slurm_ci_gpu/gpu[0-$((gpus - 1))]
CONF

/usr/sbin/slurmctld
for n in "${names[@]}"; do
    /usr/sbin/slurmd -N "$n"
done

for _ in $(seq 1 60); do
    idle=$(sinfo -h -N -o '%N %t' 2>/dev/null | grep -c -E ' (idle|mix|alloc)' || true)
    if [[ $idle -ge $nodes ]]; then
        sinfo
        srun -t 1 -N "$nodes" --ntasks-per-node=1 bash -c 'echo "$SLURMD_NODENAME $SLURM_PROCID"' \
            | sort | tr '\n' ' ' | sed 's/^/slurm_up.sh: srun on every node: /'
        echo
        exit 0
    fi
    sleep 1
done
echo "slurm_up.sh: not all ${nodes} nodes became idle in 60 s; sinfo says:" >&2
sinfo -N >&2 || true
tail -n 20 /var/log/slurm/slurmctld.log /var/log/slurm/slurmd.*.log >&2 || true
exit 1
