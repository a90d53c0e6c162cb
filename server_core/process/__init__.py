"""One llama-server child process: spawn, readiness, lifecycle, logs, stop, orphans.

``LlamaServerProcess`` is the ``IServerProcess`` the shared context runs, one per alias;
``reap_orphans`` stops children a dead server_core left behind (call it at start-up).
"""

from server_core.process.health import HealthCheck, HttpHealthCheck
from server_core.process.llama_process import STATES, LlamaServerProcess
from server_core.process.orphans import default_state_dir, reap_orphans
from server_core.process.spawn import ChildSpawner, PosixSpawner

__all__ = [
    "STATES",
    "ChildSpawner",
    "HealthCheck",
    "HttpHealthCheck",
    "LlamaServerProcess",
    "PosixSpawner",
    "default_state_dir",
    "reap_orphans",
]
