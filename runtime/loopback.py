"""A run on one machine listens on 127.0.0.1 only.

torch's ``TCPStore`` server listens on every interface whatever host it is given (and so does
the one torchrun's c10d rendezvous makes), and gloo's pairs listen on the address the host name
resolves to. On one machine none of that needs to be reachable from elsewhere, so:

* the launcher (``runtime.execute``'s process, or ``layerfit run``'s) hosts the store itself, on a
  socket it binds to 127.0.0.1 and hands to ``TCPStore`` (``master_listen_fd``); the ranks — and
  under ``layerfit run`` torchrun's agent, as rendezvous client (``is_host=false``) — connect to it;
* each rank's gloo (and NCCL's bootstrap) uses the loopback interface (``GLOO_SOCKET_IFNAME``,
  ``NCCL_SOCKET_IFNAME``).

Only a run over several nodes (``layerfit run --nnodes N --rdzv-endpoint HOST:PORT``) binds
elsewhere: there torchrun's own rendezvous and ``env://`` are used as they are.
"""

from __future__ import annotations

import os
import socket
from datetime import timedelta

import torch.distributed as dist

__all__ = ["LOOPBACK", "STORE_PREFIX", "loopback_interface", "serve_store", "connect_store", "use_loopback"]

LOOPBACK = "127.0.0.1"
STORE_PREFIX = "layerfit/ranks"  # the ranks' keys, apart from a rendezvous sharing the store


def serve_store(port: int = 0, timeout_s: float = 60.0) -> dist.TCPStore:
    """A TCPStore server listening on 127.0.0.1 only (``port`` 0: a free one; see ``.port``)."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((LOOPBACK, port))
        listener.listen(128)
        port = listener.getsockname()[1]
    except BaseException:
        listener.close()
        raise
    # The store owns the socket from here (detach: Python will not close it under it).
    return dist.TCPStore(LOOPBACK, port, is_master=True, master_listen_fd=listener.detach(), wait_for_workers=False,
                         multi_tenant=True, timeout=timedelta(seconds=timeout_s))


def connect_store(host: str, port: int, timeout_s: float) -> dist.Store:
    """A rank's client of the launcher's store, under the ranks' own prefix."""
    client = dist.TCPStore(host, port, is_master=False, timeout=timedelta(seconds=timeout_s))
    return dist.PrefixStore(STORE_PREFIX, client)


def loopback_interface() -> str | None:
    """The name of this machine's loopback interface (``lo``, ``lo0``), or None if it has none."""
    try:
        names = [name for _, name in socket.if_nameindex()]
    except OSError:
        return None
    for name in ("lo", "lo0"):
        if name in names:
            return name
    return next((name for name in names if name.startswith("lo")), None)


def use_loopback() -> None:
    """Make this rank's gloo and NCCL listen on the loopback interface (a one-machine run)."""
    name = loopback_interface()
    if name is not None:
        os.environ["GLOO_SOCKET_IFNAME"] = name
        os.environ["NCCL_SOCKET_IFNAME"] = name
    os.environ["MASTER_ADDR"] = LOOPBACK
