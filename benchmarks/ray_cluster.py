"""A Ray cluster of two nodes on this machine, for ``ray_two_node.py``: started with ``ray start``,
stopped by signalling exactly the processes it started, and asked which node ran which task.

Why a module of its own: starting and stopping the nodes, and reading the cluster's task events,
is Ray plumbing; ``ray_two_node.py`` keeps the measuring and the comparison.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack, suppress
from pathlib import Path
from typing import Any

# Ray's single-node switch: with "0" a `ray start --address` refuses to join, so it is unset here.
# Without it Ray binds to the machine's network address, as on a real cluster.
SINGLE_NODE_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
TASK_TITLE = "run_task"  # sftdata.executors.ray.run_task: Ray titles a worker ray::run_task while it runs one
START_TIMEOUT_S = 180


def free_ports(n: int) -> list[int]:
    """``n`` distinct ports free now on every interface (held open together, so none repeats)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def node_command(ray_bin: str, head_port: int, head: bool, object_store: int, temp_dir: Path,
                 head_address: str = "") -> list[str]:
    """``ray start`` for the head or the second node: one CPU, ports of its own."""
    p = free_ports(7 + 8)
    cmd = [ray_bin, "start", "--block", "--num-cpus", "1",
           "--object-store-memory", str(object_store), "--disable-usage-stats",
           "--node-manager-port", str(p[0]), "--object-manager-port", str(p[1]),
           "--dashboard-agent-listen-port", str(p[2]), "--dashboard-agent-grpc-port", str(p[3]),
           "--runtime-env-agent-port", str(p[4]), "--metrics-export-port", str(p[5]),
           "--worker-port-list", ",".join(map(str, p[7:]))]
    if head:
        return [*cmd, "--head", "--port", str(head_port), "--ray-client-server-port", str(p[6]),
                "--include-dashboard=false", "--temp-dir", str(temp_dir)]
    return [*cmd, "--address", f"{head_address}:{head_port}"]


class Node:
    """One ``ray start --block`` process, in a session of its own; ``stop`` ends what it started."""

    def __init__(self, name: str, cmd: list[str], env: dict[str, str], log: Path) -> None:
        self.name, self.log = name, log
        self.node_manager_port = int(cmd[cmd.index("--node-manager-port") + 1])
        with open(log, "wb") as f:
            self.proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, start_new_session=True)

    def wait_started(self) -> None:
        deadline = time.time() + START_TIMEOUT_S
        while b"Ray runtime started" not in self.log.read_bytes():
            if self.proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"{self.name}: ray start did not come up (exit {self.proc.poll()}): "
                                   f"{self.log.read_text(errors='replace')[-1500:]}")
            time.sleep(0.5)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # `ray start --block` drains and stops its node
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        with suppress(ProcessLookupError, PermissionError):  # anything of that node still alive
            os.killpg(self.proc.pid, signal.SIGKILL)


# Asks the cluster's GCS which node ran each attempt of the tasks named run_task (Ray keeps task
# events there; the dashboard, which the state API needs, is not started). Ray-private, so a
# failure here is reported, and the process titles above remain the evidence.
PROBE = """
import json, sys
import ray
from ray._private.state import state
from ray.core.generated import gcs_pb2
ray.init(address=sys.argv[1], logging_level="ERROR", include_dashboard=False)
ports = {n["NodeID"]: n["NodeManagerPort"] for n in ray.nodes()}
seen = {}
for raw in state._connect_and_get_accessor().get_task_events():
    ev = gcs_pb2.TaskEvents.FromString(raw)
    if ev.task_info.name == sys.argv[2] and ev.state_updates.node_id:
        seen[(ev.job_id.hex(), ev.task_id.hex(), ev.attempt_number)] = ports.get(ev.state_updates.node_id.hex())
jobs = {}
for (job, _, _), port in seen.items():
    jobs.setdefault(job, {}).setdefault(str(port), 0)
    jobs[job][str(port)] += 1
print(json.dumps(jobs))
"""


def tasks_by_node(address: str, env: dict[str, str], cwd: Path, nodes: list[Node]) -> dict[str, int] | str:
    """Task attempts of the newest job that ran ``run_task``, by node name (from the GCS); or why
    they could not be read."""
    res = subprocess.run([sys.executable, "-c", PROBE, address, TASK_TITLE], capture_output=True, text=True,
                         env=env, cwd=cwd, timeout=120)
    try:
        jobs = json.loads(res.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return f"probe failed (exit {res.returncode}): {res.stderr.strip()[-300:]}"
    if not jobs:
        return "no run_task events in the GCS"
    newest = max(jobs, key=lambda j: int.from_bytes(bytes.fromhex(j), "little"))  # a JobID's bytes: little-endian
    names = {n.node_manager_port: n.name for n in nodes}
    return {names.get(int(port), f"port {port}"): count for port, count in jobs[newest].items()}


def start_cluster(work: Path, object_store: int, env: dict[str, str], stack: ExitStack) -> dict[str, Any]:
    """The head, then the second node joining it; both stopped when ``stack`` closes. Returns the
    head's address, the nodes, and their pids and temp folder (for the JSON: a test checks that
    nothing of them outlives the script)."""
    ray_bin = str(Path(sys.executable).with_name("ray"))
    port = free_ports(1)[0]
    temp_dir = Path(tempfile.mkdtemp(prefix="r2n-", dir="/tmp"))  # short: Ray's socket paths live under it
    stack.callback(shutil.rmtree, temp_dir, True)
    nodes: list[Node] = []
    stack.callback(lambda: [n.stop() for n in reversed(nodes)])  # the second node first, then the head
    nodes.append(Node("head", node_command(ray_bin, port, True, object_store, temp_dir), env, work / "head.log"))
    nodes[0].wait_started()
    found = re.search(rb"ray start --address='([^']+)'", nodes[0].log.read_bytes())
    address = found.group(1).decode() if found else f"127.0.0.1:{port}"
    host = address.rpartition(":")[0]
    nodes.append(Node("node2", node_command(ray_bin, port, False, object_store, temp_dir, host), env,
                      work / "node2.log"))
    nodes[1].wait_started()
    return {"address": address, "nodes": nodes, "temp_dir": str(temp_dir), "pids": [n.proc.pid for n in nodes]}
