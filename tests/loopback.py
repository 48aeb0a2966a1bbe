"""Helpers for tests that run servers on 127.0.0.1: a free port and JSON over HTTP."""

from __future__ import annotations

import json
import socket
import urllib.parse
import urllib.request
from typing import Any


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def get_json(port: int, route: str, **params: str) -> Any:
    """GET `route` from the server on 127.0.0.1:`port` with query `params` and decode the JSON body."""
    url = f"http://127.0.0.1:{port}{route}"
    if params:
        url += "?" + urllib.parse.urlencode(params)
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response)
