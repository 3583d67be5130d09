"""The replicated deployment of `make up-ha`, as the fault suite sees it.

Everything comes from what ``deploy/local/ha.sh`` recorded in its run directory: the resolved
settings (``deployment.env``) and one pid file per process. Faults signal only a recorded pid,
after checking that the process is still the one that was started (not a reused pid); a
component comes back through ``ha.sh start NAME``, the same code path as ``make up-ha``.
"""
from __future__ import annotations

import asyncio
import os
import re
import signal
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import orjson
from aiokafka.admin import AIOKafkaAdminClient

from core.partitioning import partition_for_key

REPO = Path(__file__).resolve().parents[2]
HA_SH = REPO / "deploy" / "local" / "ha.sh"
# Settings that describe the deployment rather than choose it: not handed back to ha.sh.
_NOT_INPUTS = {"CLAP_EPOCH"}


def _process_start(pid: int) -> float | None:
    """The Unix time a live, non-zombie process started, from /proc; None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        boot = next(line for line in Path("/proc/stat").read_text().splitlines() if line.startswith("btime"))
    except (OSError, StopIteration):
        return None
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] == "Z":
        return None
    return int(boot.split()[1]) + int(fields[19]) / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Deployment:
    run_dir: Path
    settings: dict[str, str]

    @classmethod
    def load(cls, run_dir: Path) -> Deployment:
        path = run_dir / "deployment.env"
        if not path.is_file():
            raise SystemExit(f"no {path}: start the deployment first (make up-ha, or deploy/local/ha.sh up)")
        settings = {}
        for line in path.read_text().splitlines():
            key, sep, value = line.partition("=")
            if sep:
                settings[key] = value
        return cls(run_dir, settings)

    # -- addresses -------------------------------------------------------------------------

    def _list(self, key: str) -> list[str]:
        return [v for v in self.settings.get(key, "").split(",") if v]

    @property
    def kafka_bootstrap(self) -> str:
        return self.settings["KAFKA_BOOTSTRAP"]

    @property
    def clap_topic(self) -> str:
        return self.settings.get("CLAP_TOPIC", "claps")

    @property
    def cassandra_hosts(self) -> list[str]:
        return self._list("CASSANDRA_HOSTS")

    @property
    def cassandra_port(self) -> int:
        return int(self.settings.get("CASSANDRA_PORT", "9042"))

    @property
    def keyspace(self) -> str:
        return self.settings.get("CASSANDRA_KEYSPACE", "claps")

    @property
    def gateway_http(self) -> list[str]:
        return [f"http://127.0.0.1:{port}" for port in self._list("GATEWAY_PORTS")]

    @property
    def gateway_ws(self) -> list[str]:
        return [f"ws://127.0.0.1:{port}/ws" for port in self._list("GATEWAY_PORTS")]

    @property
    def processor_web_ports(self) -> list[int]:
        return [int(p) for p in self._list("PROCESSOR_WEB_PORTS")]

    def ha_env(self) -> dict[str, str]:
        """The environment that makes ha.sh address this same deployment."""
        inputs = {k: v for k, v in self.settings.items() if k not in _NOT_INPUTS}
        return {**os.environ, **inputs}

    # -- processes -------------------------------------------------------------------------

    def pid(self, name: str) -> int | None:
        """The recorded pid of ``name`` if that process still runs (and is the one started)."""
        path = self.run_dir / f"{name}.pid"
        try:
            pid = int(path.read_text().split()[0])
            written = path.stat().st_mtime
        except (OSError, ValueError, IndexError):
            return None
        started = _process_start(pid)
        if started is None or started > written + 2:
            return None
        return pid

    def running(self) -> list[str]:
        """Every component with a pid file whose process runs."""
        return sorted(p.stem for p in self.run_dir.glob("*.pid") if self.pid(p.stem) is not None)

    def signal(self, name: str, sig: signal.Signals) -> int:
        pid = self.pid(name)
        if pid is None:
            raise RuntimeError(f"{name} is not running (no live recorded pid in {self.run_dir})")
        os.kill(pid, sig)
        return pid

    async def wait_gone(self, name: str, pid: int, timeout_s: float = 10) -> None:
        deadline = time.monotonic() + timeout_s
        while _process_start(pid) is not None and time.monotonic() < deadline:
            await asyncio.sleep(0.05)

    async def ha(self, *args: str, timeout_s: float = 600) -> str:
        """Run ``ha.sh ARGS`` for this deployment; its output, or RuntimeError if it failed."""
        process = await asyncio.create_subprocess_exec(
            "bash", str(HA_SH), *args, env=self.ha_env(), cwd=REPO,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )
        try:
            out, _ = await asyncio.wait_for(process.communicate(), timeout_s)
        except TimeoutError:
            process.kill()
            await process.wait()
            raise RuntimeError(f"ha.sh {' '.join(args)} did not finish in {timeout_s} s") from None
        text = out.decode(errors="replace")
        if process.returncode != 0:
            raise RuntimeError(f"ha.sh {' '.join(args)} failed ({process.returncode}):\n{text[-3000:]}")
        return text

    # -- who leads what --------------------------------------------------------------------

    async def partition_leaders(self, topic: str) -> dict[int, int]:
        """partition -> leader broker id of ``topic``."""
        admin = AIOKafkaAdminClient(bootstrap_servers=self.kafka_bootstrap, request_timeout_ms=10_000)
        await admin.start()
        try:
            described = await admin.describe_topics([topic])
        finally:
            await admin.close()
        return {p["partition"]: p["leader"] for p in described[0]["partitions"]}

    async def partition_of(self, article: str) -> int:
        leaders = await self.partition_leaders(self.clap_topic)
        return partition_for_key(article.encode(), len(leaders))

    async def active_controller(self) -> int:
        """The node id of the KRaft quorum's leader, from Kafka's own quorum tool."""
        process = await asyncio.create_subprocess_exec(
            "java", "-Xmx128m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
            f"-Dlog4j2.configurationFile={REPO}/deploy/local/kafka/tools-log4j2.properties",
            "-cp", f"{self.settings.get('CLAP_LIB_DIR', REPO / '.lib')}/kafka/*",
            "org.apache.kafka.tools.MetadataQuorumCommand", "--bootstrap-server", self.kafka_bootstrap,
            "describe", "--status",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await asyncio.wait_for(process.communicate(), 60)
        match = re.search(r"LeaderId:\s+(\d+)", out.decode(errors="replace"))
        if match is None:
            raise RuntimeError(f"no LeaderId in the quorum tool's output:\n{out.decode(errors='replace')[-2000:]}")
        return int(match.group(1))

    def worker_owning(self, partition: int) -> str | None:
        """The processor (processorN) that actively owns a clap partition, from Faust's router."""
        for port in self.processor_web_ports:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/router/", timeout=3) as response:
                    routes = orjson.loads(response.read())
            except OSError:
                continue
            for url, tables in routes.items():
                if any(partition in parts for parts in tables.values()):
                    owner_port = int(url.rsplit(":", 1)[1].strip("/"))
                    if owner_port in self.processor_web_ports:
                        return f"processor{self.processor_web_ports.index(owner_port) + 1}"
            return None
        return None
