"""Listening TCP sockets of a set of processes, read from Linux /proc (no psutil here).

A socket is matched to its process through the inode that /proc/<pid>/fd links name
(`socket:[inode]`) and /proc/net/tcp{,6} list with the local address of each socket.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from dataclasses import dataclass
from pathlib import Path

LISTEN = "0A"  # the TCP state code of a listening socket in /proc/net/tcp


@dataclass(frozen=True)
class Listener:
    process: str  # the process's command, e.g. "gcs_server" or "ray::IDLE"
    host: str
    port: int

    @property
    def loopback(self) -> bool:
        address = ipaddress.ip_address(self.host)
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
            address = address.ipv4_mapped  # `::ffff:127.0.0.1`: IPv4 loopback on a v6 socket
        return address.is_loopback


def _host(hex_address: str) -> str:
    """/proc/net/tcp's address: the raw bytes in hex, each 32-bit word in host byte order."""
    raw = bytes.fromhex(hex_address)
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    return socket.inet_ntop(socket.AF_INET if len(raw) == 4 else socket.AF_INET6, words)


def _listening_inodes() -> dict[str, tuple[str, int]]:
    found = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == LISTEN:
                address, port = fields[1].split(":")
                found[fields[9]] = (_host(address), int(port, 16))
    return found


def _command(pid: int) -> str:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "?"
    return os.path.basename(argv[0].decode(errors="replace")) if argv and argv[0] else "?"


def listeners(pids: list[int]) -> set[Listener]:
    """Every listening TCP socket that one of `pids` holds open (processes that vanish while
    being read are skipped)."""
    inodes = _listening_inodes()
    found = set()
    for pid in pids:
        try:
            links = [os.readlink(fd) for fd in Path(f"/proc/{pid}/fd").iterdir()]
        except OSError:
            continue
        for link in links:
            if link.startswith("socket:[") and (inode := link[8:-1]) in inodes:
                found.add(Listener(_command(pid), *inodes[inode]))
    return found
