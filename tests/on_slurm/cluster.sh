#!/bin/sh
# Runs "$@" against a one-node Slurm cluster of its own, started here and stopped at the end.
# Meant to run as pid 1 of a fresh pid and network namespace (run.sh makes one): everything
# it starts dies with it, and Slurm can reach nothing but loopback. Needs root.
set -eu
ip link set lo up
# Slurm ignores 127.0.0.1 when no other IPv4 address exists; a second loopback address
# gives it one (still loopback: nothing leaves the namespace).
ip addr add 127.0.0.2/8 dev lo
dir=$(mktemp -d /tmp/spawnkit-slurm.XXXXXX)
chmod 755 "$dir"
stop() {
    for pidfile in "$dir/slurmd.pid" "$dir/slurmctld.pid" "$dir/munged.pid"; do
        [ -f "$pidfile" ] || continue
        pid=$(cat "$pidfile")
        kill "$pid" 2>/dev/null || true
        # slurmctld saves its state as it stops: the directory goes only once each daemon
        # is gone (or a zombie: this shell, pid 1 here, need not reap it); 10 s at most.
        i=0
        while [ -d "/proc/$pid" ] && ! grep -q ') Z' "/proc/$pid/stat" 2>/dev/null \
            && [ $i -lt 100 ]; do
            sleep 0.1
            i=$((i + 1))
        done
    done
    rm -rf "$dir"
}
trap stop EXIT INT TERM

# A private munged; its socket directory world-executable, its path short.
mkdir -m 700 "$dir/munge"
mkdir -m 711 "$dir/m"
dd if=/dev/urandom of="$dir/munge/munge.key" bs=1024 count=1 2>/dev/null
chmod 400 "$dir/munge/munge.key"
munged --force --key-file="$dir/munge/munge.key" --socket="$dir/m/s" \
    --pid-file="$dir/munged.pid" --log-file="$dir/munge/munged.log" \
    --seed-file="$dir/munge/seed"

# The node as slurmd sees this machine (CPUs, sockets, memory), named localhost; more CPUs
# declared than it has (config_overrides), so that the tests' jobs of several ranks fit.
hardware=$(slurmd -C | head -n 1 | sed -e 's/^NodeName=[^ ]*//' -e 's/ CPUs=[0-9]*//' \
    -e 's/ Boards=[0-9]*//' -e 's/ SocketsPerBoard=[0-9]*//' -e 's/ CoresPerSocket=[0-9]*//' \
    -e 's/ ThreadsPerCore=[0-9]*//')
mkdir -p "$dir/state" "$dir/spool"
cat >"$dir/slurm.conf" <<CONF
ClusterName=spawnkit
SlurmctldHost=localhost(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$dir/m/s
CredType=cred/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool/%n
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
SlurmctldPort=6817
SlurmdPort=6818
SlurmdParameters=config_overrides
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/builtin
ProctrackType=${SPAWNKIT_SLURM_PROCTRACK:-proctrack/cgroup}
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
KillWait=2
InactiveLimit=0
NodeName=localhost NodeAddr=127.0.0.1 CPUs=16 $hardware State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
CONF
cat >"$dir/cgroup.conf" <<CONF
CgroupPlugin=autodetect
CgroupMountpoint=/sys/fs/cgroup
ConstrainCores=no
ConstrainRAMSpace=no
ConstrainDevices=no
CONF
export SLURM_CONF="$dir/slurm.conf"
slurmctld -i
slurmd -N localhost
# Up within seconds; bounded so that a cluster that cannot start fails the run, naming why.
i=0
until sinfo -h -o %t 2>/dev/null | grep -qx idle; do
    i=$((i + 1))
    if [ $i -gt 150 ]; then
        echo "cluster.sh: the Slurm node never became idle; its logs:" >&2
        tail -n 20 "$dir/slurmctld.log" "$dir/slurmd.log" >&2 || true
        exit 1
    fi
    sleep 0.1
done
"$@"
