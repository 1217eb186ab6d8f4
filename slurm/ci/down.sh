#!/bin/bash
# Stops the test cluster of slurm/ci/up.sh and removes its state; safe to run when it is not up.
D=${D:-/tmp/slurm-ci}
[[ -e $D/pids ]] || { rm -rf "$D"; exit 0; }
export SLURM_CONF=$D/slurm.conf
read -r munged_pid ctld slurmd_pid < "$D/pids"
scontrol shutdown > /dev/null 2>&1 || kill "$ctld" "$slurmd_pid" 2> /dev/null
for p in $ctld $slurmd_pid; do
  for _ in $(seq 50); do kill -0 "$p" 2> /dev/null || break; sleep 0.2; done
  kill -9 "$p" 2> /dev/null
done
kill "$munged_pid" 2> /dev/null
rm -rf "$D"
rmdir /run/munge 2> /dev/null || true
echo "slurm/ci/down.sh: cluster stopped"
exit 0
