#!/usr/bin/env bash
# A throw-away single-node Slurm cluster on localhost for the end-to-end tests (and for trying
# `convtt-launch sweep submit` by hand), everything under one directory:
#
#   .ci/slurm-cluster.sh start DIR   # munged + slurmctld + slurmd; prints `export SLURM_CONF=…`
#   .ci/slurm-cluster.sh stop DIR    # stops the three daemons (by the pids recorded in DIR)
#
# Needs root and Debian's slurm-wlm + munge (.ci/setup.sh installs them). Its own munged socket
# and free TCP ports, so it never touches a system Slurm or munge. Exit 0 when the node is idle
# and accepts jobs; otherwise 1 with the reason on stderr (the daemons' logs are in DIR/log).
# Recipe: shared/research/spike.md §7 (no systemd: the daemons are started by hand).
set -euo pipefail

cmd="${1:-}"; dir="${2:-}"
[[ -n "$cmd" && -n "$dir" ]] || { echo "usage: $0 start|stop DIR" >&2; exit 2; }
fail() { echo "slurm-cluster: $*" >&2; exit 1; }

stop() {
  # Cancel what is still queued or running first: job steps (slurmstepd) outlive slurmd.
  if [[ -f "$dir/slurm.conf" && -f "$dir/slurmctld.pid" ]] && kill -0 "$(cat "$dir/slurmctld.pid")" 2>/dev/null; then
    SLURM_CONF="$dir/slurm.conf" scancel --full --quiet --user=root 2>/dev/null || true
    for _ in $(seq 100); do
      [[ -z "$(SLURM_CONF="$dir/slurm.conf" squeue -h 2>/dev/null)" ]] && break
      sleep 0.2
    done
  fi
  for d in slurmd slurmctld munged; do
    local pidfile="$dir/$d.pid"
    [[ -f "$pidfile" ]] || continue
    local pid; pid="$(cat "$pidfile" 2>/dev/null || true)"
    if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$pidfile"
  done
}

if [[ "$cmd" == stop ]]; then stop; exit 0; fi
[[ "$cmd" == start ]] || fail "unknown command $cmd (start|stop)"

[[ $(id -u) == 0 ]] || fail "needs root (slurmd runs jobs as their users; this cluster runs them as root)"
for b in munged slurmctld slurmd sbatch squeue sinfo scontrol; do
  command -v "$b" >/dev/null || [[ -x /usr/sbin/$b ]] || fail "$b not found: install slurm-wlm and munge (bash .ci/setup.sh)"
done
id munge >/dev/null 2>&1 || fail "no munge user: install munge"
[[ -r /etc/munge/munge.key ]] || fail "/etc/munge/munge.key missing (munge's postinst creates it)"

mkdir -p "$dir"/{state,spool,log,munge,pmix}
dir="$(cd "$dir" && pwd)"
chown munge:munge "$dir/munge"; chmod 0755 "$dir/munge"   # munged: socket dir executable by all

# Two free TCP ports (the kernel picks them; the race with other programs is negligible here).
read -r ctld_port slurmd_port < <(python3 - <<'PY'
import socket
s = [socket.socket() for _ in range(2)]
for x in s: x.bind(("127.0.0.1", 0))
print(*[x.getsockname()[1] for x in s])
PY
)

cpus="$(nproc)"
cat > "$dir/slurm.conf" <<CONF
ClusterName=convtt-test
SlurmctldHost=localhost
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$dir/munge/munge.socket
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
MailProg=/bin/true
KillWait=10
MinJobAge=300
NodeName=localhost CPUs=$cpus RealMemory=1000 State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
CONF

# PMIx's per-step directories default to /tmp/spmix_appdir_<uid>_<job>.<step>; job ids restart
# at 1 in every throw-away cluster, so a directory an earlier cluster's step left behind makes
# the same step of this one fail to launch ("File exists"). Keep them inside this cluster.
cat > "$dir/mpi.conf" <<CONF
PMIxCliTmpDirBase=$dir/pmix
CONF

stop   # leftovers of an earlier run in the same directory
runuser -u munge -- /usr/sbin/munged --socket="$dir/munge/munge.socket" \
  --pid-file="$dir/munge/munged.pid" --log-file="$dir/munge/munged.log" \
  --seed-file="$dir/munge/munged.seed" \
  || fail "munged did not start: $(tail -n 3 "$dir/munge/munged.log" 2>/dev/null)"
for _ in $(seq 50); do [[ -s "$dir/munge/munged.pid" ]] && break; sleep 0.1; done
cp "$dir/munge/munged.pid" "$dir/munged.pid"

export SLURM_CONF="$dir/slurm.conf"
/usr/sbin/slurmctld -f "$SLURM_CONF" -i \
  || fail "slurmctld did not start: $(tail -n 5 "$dir/log/slurmctld.log" 2>/dev/null)"
/usr/sbin/slurmd -f "$SLURM_CONF" -N localhost \
  || fail "slurmd did not start: $(tail -n 5 "$dir/log/slurmd.log" 2>/dev/null)"

state=""
for _ in $(seq 200); do
  state="$(sinfo -h -n localhost -o %t 2>/dev/null || true)"
  [[ "$state" == idle ]] && break
  sleep 0.1
done
if [[ "$state" != idle ]]; then
  msg="node localhost is ${state:-unreachable} after 20 s: $(tail -n 3 "$dir/log/slurmd.log" "$dir/log/slurmctld.log" 2>/dev/null | tr '\n' ' ')"
  stop
  fail "$msg"
fi
echo "export SLURM_CONF=$SLURM_CONF"
