"""Two replicas behind HAProxy (devstack.replicas): requests alternate, and a replica that dies is routed around.

Real processes (launchers, their workers, Debian's haproxy — installed with apt-get when missing); no Letta needed.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import httpx

from devstack._proc import free_port
from devstack.replicas import Replicas, served_by


def env() -> dict[str, str]:
    drop = {"SERVICE_TOKEN", "SERVICE_AUTH", "REDIS_URL", "PROMETHEUS_MULTIPROC_DIR"}
    base = {k: v for k, v in os.environ.items() if k not in drop}
    return base | {"SERVICE_AUTH": "off", "LETTA_BASE_URL": f"http://127.0.0.1:{free_port()}"}


def who(url: str) -> tuple[int, str]:
    """One request on a fresh connection: (status, the process that answered)."""
    response = httpx.get(url + "/live", timeout=10)
    return response.status_code, served_by(response)


def test_requests_alternate_and_a_dead_replica_is_routed_around(tmp_path: Path) -> None:
    with Replicas(2, env(), tmp_path, workers=1) as replicas:
        servers = [who(url)[1] for url in replicas.replica_urls]
        assert servers[0] != servers[1]
        assert replicas.server_states() == {"replica0": "UP", "replica1": "UP"}

        answers = [who(replicas.url) for _ in range(8)]
        assert all(status == 200 for status, _ in answers), answers
        order = [servers.index(server) for _, server in answers]
        assert order in ([0, 1] * 4, [1, 0] * 4), order  # round robin

        replicas.kill(0, signal.SIGKILL)  # the replica dies at once: launcher and worker
        answers = [who(replicas.url) for _ in range(8)]  # the health check may not have noticed yet
        assert answers == [(200, servers[1])] * 8  # retried on the other replica, no error seen
        replicas.wait_state(0, "DOWN")

        replicas.restart(0)
        replicas.wait_state(0, "UP")
        back = who(replicas.replica_urls[0])[1]
        seen = set()
        for _ in range(20):  # back in the rotation (HAProxy lets the current round finish first)
            seen.add(who(replicas.url)[1])
            if seen == {back, servers[1]}:
                break
        assert seen == {back, servers[1]}
    assert all(proc is not None and proc.poll() is not None for proc in replicas.procs)
