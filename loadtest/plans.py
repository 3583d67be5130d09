"""What the load test connects to and how readers are spread: shared by the orchestrator and children."""
from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass

from loadtest.articles import ArticleMix


def loopback_address(host: str) -> str:
    """The IPv4 address of ``host``, which must be in 127.0.0.0/8: the load test sends traffic nowhere else."""
    address = ipaddress.ip_address(socket.gethostbyname(host))
    if address not in ipaddress.ip_network("127.0.0.0/8"):
        raise ValueError(f"{host} is {address}: this tool only talks to 127.0.0.0/8")
    return str(address)


@dataclass(frozen=True)
class Target:
    host: str
    port: int
    path: str = "/ws"

    @classmethod
    def from_url(cls, url: str) -> Target:
        """``ws://host:port/path`` or ``http://host:port`` (path defaults to ``/ws``)."""
        scheme, _, rest = url.partition("://")
        hostport, slash, path = rest.partition("/")
        host, _, port = hostport.rpartition(":")
        if scheme not in ("ws", "http") or not host or not port:
            raise ValueError(f"expected ws://host:port[/path] or http://host:port, got {url!r}")
        path = "/" + path if slash and path else "/ws"
        return cls(loopback_address(host), int(port), path)

    @property
    def http_base(self) -> str:
        return f"http://{self.host}:{self.port}"


@dataclass(frozen=True)
class ReaderPlan:
    targets: tuple[Target, ...]
    mix: ArticleMix
    readers: int
    processes: int
    source_ips: tuple[str, ...] = ("127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5")
    connect_concurrency: int = 64  # in-flight handshakes per process: the gateway's accept backlog is 100
    connect_timeout_s: float = 20.0
    connect_attempts: int = 3
    max_lifetime_s: float = 900.0  # a reader process exits by itself after this, whatever happens
    log_frames: bool = False  # log every live total per reader, for per-clap latency (hot)

    def readers_of(self, process: int) -> range:
        return range(process, self.readers, self.processes)
