#!/bin/sh
# The ray env's test run: inside a network namespace with loopback alone, so that no Ray
# traffic can leave 127.0.0.1, and a pid namespace of its own, so that every Ray process the
# run starts ends with it. A shared head node (8 logical CPUs) serves the tests that do not
# start clusters of their own. Needs root (unshare) and iproute2 (ip).
set -eu
exec unshare --net --pid --fork --mount-proc sh -eu -c '
    ip link set lo up
    export RAY_AUTH_MODE=disabled RAY_USAGE_STATS_ENABLED=0 SPAWNKIT_RAY_NAMESPACE=1
    ray start --head --port=6379 --node-ip-address=127.0.0.1 --num-cpus=8 \
        --include-dashboard=false --disable-usage-stats >/dev/null 2>&1
    export RAY_ADDRESS=127.0.0.1:6379
    # Not exec: the shell stays init of the namespace, the parent of the head daemons once
    # "ray start" has left them and of the worker pool they grow and shrink as Ray sees fit.
    # Under pytest that pool would pass for processes a job left behind.
    python -m pytest tests/on_ray "$@"
' sh "$@"
