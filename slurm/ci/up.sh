#!/bin/bash
# A one-node SLURM cluster on this machine for the tests (shared/design/INFRA.md §4): munged, slurmctld and
# slurmd as root, everything under $D (default /tmp/slurm-ci) and /run/munge; clients read $D/slurm.conf
# through SLURM_CONF. Four CPUs and two fake GPUs whatever the hardware. Stop it with slurm/ci/down.sh.
# Exits 77 (a skip for ctest) where it cannot run: not root, or SLURM or munge not installed.
set -euo pipefail
D=${D:-/tmp/slurm-ci}
H=$(hostname -s)
for program in /usr/sbin/slurmctld /usr/sbin/slurmd /usr/sbin/munged /usr/bin/sbatch; do
  [[ -x $program ]] || { echo "slurm/ci/up.sh: $program is not installed (scripts/setup.sh installs it); skipping"; exit 77; }
done
[[ $(id -u) -eq 0 ]] || { echo "slurm/ci/up.sh: the daemons need root; skipping"; exit 77; }
[[ -e $D/pids ]] && bash "$(dirname "$0")/down.sh"

mkdir -p "$D"/{state,spool,log,dev} /run/munge
chown munge:munge /run/munge
[[ -s /etc/munge/munge.key ]] || mungekey -c
for i in 0 1; do [[ -e $D/dev/nvidia$i ]] || mknod "$D/dev/nvidia$i" c 1 3; done

cat > "$D/slurm.conf" <<CONF
ClusterName=ci
SlurmctldHost=$H
SlurmUser=root
AuthType=auth/munge
StateSaveLocation=$D/state
SlurmdSpoolDir=$D/spool
SlurmctldPidFile=$D/slurmctld.pid
SlurmdPidFile=$D/slurmd.pid
SlurmctldLogFile=$D/log/slurmctld.log
SlurmdLogFile=$D/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=pmix
MailProg=/bin/true
ReturnToService=2
SlurmdParameters=config_overrides
GresTypes=gpu
NodeName=$H CPUs=4 RealMemory=8000 Gres=gpu:2 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
echo "NodeName=$H Name=gpu File=$D/dev/nvidia[0-1]" > "$D/gres.conf"
export SLURM_CONF=$D/slurm.conf

setsid runuser -u munge -- /usr/sbin/munged -F > "$D/log/munged.out" 2>&1 < /dev/null &
wrapper=$!
for _ in $(seq 50); do [[ -S /run/munge/munge.socket.2 ]] && break; sleep 0.1; done
munged_pid=$(pgrep -P "$wrapper" munged || echo "$wrapper")
setsid /usr/sbin/slurmctld -D -f "$SLURM_CONF" > "$D/log/slurmctld.out" 2>&1 < /dev/null &
ctld=$!
setsid /usr/sbin/slurmd -D -f "$SLURM_CONF" > "$D/log/slurmd.out" 2>&1 < /dev/null &
slurmd_pid=$!
echo "$munged_pid $ctld $slurmd_pid" > "$D/pids"
for _ in $(seq 100); do [[ $(sinfo -h -o %T 2>/dev/null) == idle ]] && break; sleep 0.2; done
state=$(sinfo -h -o %T 2>/dev/null || true)
[[ $state == idle ]] || { echo "slurm/ci/up.sh: the node is '$state', not idle; logs in $D/log" >&2; tail -5 "$D"/log/*.log >&2; exit 1; }
echo "slurm/ci/up.sh: cluster up (SLURM_CONF=$SLURM_CONF)"
sinfo
