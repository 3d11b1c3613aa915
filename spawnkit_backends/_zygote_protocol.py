"""What the job and its fork server (``_zygote``) say to each other, in one place.

The control socket carries, from the job: the header frame (8-byte length, then a pickle),
then requests of :data:`REQUEST_SIZE` bytes (``struct`` format :data:`REQUEST`: kind, flags,
descriptor count, rank), each with its descriptors attached (``SCM_RIGHTS``): the rank's
status socket, its spec channel, the job's stdout and stderr when :data:`HAS_STDOUT` and
:data:`HAS_STDERR` say so, then the spec's own. From the server: :data:`READY`, or
:data:`FAILED` with the traceback of what it could not import, each followed by an 8-byte
length and that text. A rank's status socket carries its pid, then its exit code (``-N``
for signal N), each a :data:`CODE`.
"""

from __future__ import annotations

REQUEST = "!cBHi"
REQUEST_SIZE = 8
FORK, RETIRE = b"F", b"R"
HAS_STDOUT, HAS_STDERR = 1, 2
READY, FAILED = b"K", b"E"
CODE = "!i"
# What fits in one SCM_RIGHTS message on every POSIX system spawnkit runs on.
MAX_FDS = 250
