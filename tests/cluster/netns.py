"""A network namespace joined to this one by a veth pair, for a node whose network the
test cuts (``ip link set ... down``) and restores. Needs ``ip`` and the right to create
namespaces (root here); removed, with its link, on exit."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass


def ip_binary() -> str:
    found = shutil.which("ip") or shutil.which("ip", path="/usr/sbin:/sbin")
    assert found, "the cluster test's network cut needs iproute2's ip"
    return found


def _ip(*args: str) -> None:
    subprocess.run([ip_binary(), *args], check=True, capture_output=True, timeout=10)


@dataclass(frozen=True)
class Namespace:
    """``name``; the node's address inside (``inner``); the host end of the veth pair."""

    name: str
    host_link: str
    inner: str

    @property
    def prefix(self) -> tuple[str, ...]:
        """Run a command inside: ``ip netns exec NAME`` execs it, so its pid is the command's."""
        return (ip_binary(), "netns", "exec", self.name)

    def cut(self) -> None:
        """The host end down: the route goes, packets to the node are unreachable."""
        _ip("link", "set", self.host_link, "down")

    def restore(self) -> None:
        _ip("link", "set", self.host_link, "up")


@contextmanager
def namespace() -> Iterator[Namespace]:
    tag = str(os.getpid())[-6:]
    octet = os.getpid() % 250 + 1
    ns = Namespace(f"sc-test-{tag}", f"sch{tag}", f"10.213.{octet}.2")
    inner_link = f"scn{tag}"
    _ip("netns", "add", ns.name)
    try:
        _ip("link", "add", ns.host_link, "type", "veth", "peer", "name", inner_link)
        _ip("link", "set", inner_link, "netns", ns.name)
        _ip("addr", "add", f"10.213.{octet}.1/30", "dev", ns.host_link)
        _ip("link", "set", ns.host_link, "up")
        inside = ("netns", "exec", ns.name, ip_binary())
        _ip(*inside, "addr", "add", f"{ns.inner}/30", "dev", inner_link)
        _ip(*inside, "link", "set", inner_link, "up")
        _ip(*inside, "link", "set", "lo", "up")
        yield ns
    finally:
        _ip("netns", "del", ns.name)  # takes the veth pair with it
