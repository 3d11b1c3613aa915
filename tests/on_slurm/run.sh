#!/bin/sh
# The slurm env's test run: installs Slurm and munge if they are missing (Debian packages,
# as root), then runs tests/on_slurm against a one-node cluster of its own (cluster.sh) in a
# network namespace with loopback alone and a pid namespace of its own, so that nothing
# reaches another address and every daemon and task ends with the run. Needs root.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
if ! command -v srun >/dev/null || ! command -v slurmctld >/dev/null \
    || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null; then
    if [ "$(id -u)" != 0 ]; then
        echo "run.sh: Slurm is not installed and this is not root; install it with" \
            "apt-get install slurmctld slurmd slurm-client munge, or run as root" >&2
        exit 1
    fi
    # A fresh machine may have no package lists yet.
    DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurmctld slurmd slurm-client munge >/dev/null
fi
if [ "$(id -u)" != 0 ]; then
    echo "run.sh: the Slurm tests run their own cluster in namespaces, which needs root" >&2
    exit 1
fi
exec unshare --net --pid --fork --mount-proc "$here/cluster.sh" \
    env SPAWNKIT_SLURM_NAMESPACE=1 python -m pytest "$here" "$@"
