#!/usr/bin/env bash
# Bring up a one-node SLURM cluster on this machine (root, Debian/Ubuntu), for the CI test of
# `snakemake --profile slurm`. Facts behind each step: ../shared/SLURM_LOCAL.md.
#   .ci/slurm_up.sh        # ~10 s when the packages are cached
# The node advertises one fake GPU (gres gpu:fake:1, File=/dev/null) so GPU-requesting jobs
# schedule on a CPU machine; jobs still run on the CPU.
set -euo pipefail

if [[ $(id -u) -ne 0 ]]; then
    echo "slurm_up.sh: needs root (apt-get, daemons)" >&2
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

mkdir -p /etc/slurm /var/lib/slurm/slurmctld /var/lib/slurm/slurmd /var/log/slurm
chown -R slurm:slurm /var/lib/slurm /var/log/slurm 2>/dev/null || true
node_line=$(slurmd -C | head -n1)
cat >/etc/slurm/slurm.conf <<CONF
ClusterName=ci
SlurmctldHost=${host}(127.0.0.1)
SlurmUser=slurm
AuthType=auth/munge
StateSaveLocation=/var/lib/slurm/slurmctld
SlurmdSpoolDir=/var/lib/slurm/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
ReturnToService=2
EnforcePartLimits=ALL
MinJobAge=300
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
GresTypes=gpu
${node_line} NodeAddr=127.0.0.1 Gres=gpu:fake:1 State=UNKNOWN
PartitionName=main Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
cat >/etc/slurm/gres.conf <<CONF
AutoDetect=off
NodeName=${host} Name=gpu Type=fake File=/dev/null
CONF

pgrep -x slurmctld >/dev/null || /usr/sbin/slurmctld
pgrep -x slurmd >/dev/null || /usr/sbin/slurmd

for _ in $(seq 1 60); do
    state=$(sinfo -h -o %t 2>/dev/null | head -n1 || true)
    if [[ $state == idle* || $state == mix* || $state == alloc* ]]; then
        echo "slurm_up.sh: node ${host} is ${state}"
        srun -t 1 hostname >/dev/null
        exit 0
    fi
    sleep 1
done
echo "slurm_up.sh: the node did not become idle in 60 s; sinfo says '${state:-nothing}'" >&2
tail -n 20 /var/log/slurm/slurmctld.log /var/log/slurm/slurmd.log >&2 || true
exit 1
