"""An S3-compatible server and a latency-injecting proxy on loopback, for tests and benches.

``S3Server`` runs moto's standalone server (``moto[server]``) in a subprocess, so
that it can be killed to cut connections mid-read and so that its Python work does
not compete with the measured process for the GIL. ``LatencyProxy`` is a TCP proxy
in front of it that holds each request (each chunk the client sends after a quiet
moment) for ``delay_ms`` before forwarding it: one object store round trip then
costs at least that much, as on a remote store.

``ProxyProcess`` runs the same proxy in a process of its own (``python
tests/s3server.py proxy PORT --delay-ms N`` prints the port it listens on), for a
benchmark: the proxy's threads then do not take the GIL from the loader it measures.

Example:
    >>> with S3Server() as s3, LatencyProxy(s3.port, delay_ms=10) as proxy:  # doctest: +SKIP
    ...     s3.create_bucket("data")
    ...     opts = s3.storage_options(port=proxy.port)
    ...     lance.write_dataset(table, "s3://data/ds.lance", storage_options=opts)
"""

from __future__ import annotations

import os
import select
import socket
import subprocess
import sys
import threading
import time
from typing import Dict, List, Optional

# moto accepts any key unless authentication is on; these are placeholders, no secret.
ACCESS_KEY = "testing"
SECRET_KEY = "testing"
REGION = "us-east-1"


def free_port() -> int:
    """A TCP port on 127.0.0.1 nothing listens on now.

    Example:
        >>> 1024 < free_port() < 65536
        True
    """
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_listening(port: int, timeout: float, proc: Optional[subprocess.Popen] = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the S3 server on port {port} exited at start (code {proc.returncode})")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listened on 127.0.0.1:{port} within {timeout}s")


class S3Server:
    """moto's S3 server on 127.0.0.1, in a subprocess; ``stop()`` (or the ``with``) ends it.

    ``auth=True`` makes moto check credentials against its IAM from the second
    request on (create the one bucket first): every key is then unknown and refused
    with 403, which is what it is for. (moto's signature check also refuses Lance's
    list requests signed with a good key, so it cannot serve reads with auth on.)

    Example:
        >>> with S3Server() as s3:  # doctest: +SKIP
        ...     s3.create_bucket("data")
        ...     lance.dataset("s3://data/ds.lance", storage_options=s3.storage_options())
    """

    def __init__(self, *, auth: bool = False, start_timeout: float = 60.0) -> None:
        self.port = free_port()
        self.auth = auth
        self.access_key, self.secret_key = ACCESS_KEY, SECRET_KEY
        env = dict(os.environ)
        # With auth, the first request (create_bucket) goes unchecked.
        env["INITIAL_NO_AUTH_ACTION_COUNT"] = "1" if auth else "inf"
        self._launch([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)], env, start_timeout)

    def _launch(self, cmd: list, env: Optional[Dict[str, str]], start_timeout: float) -> None:
        """Start the server process and wait until it listens on ``self.port``."""
        self._proc: Optional[subprocess.Popen] = subprocess.Popen(
            cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            _wait_listening(self.port, start_timeout, self._proc)
        except BaseException:
            self.stop()
            raise

    @property
    def endpoint(self) -> str:
        """``http://127.0.0.1:<port>``."""
        return f"http://127.0.0.1:{self.port}"

    def _client(self, service: str, port: Optional[int] = None):  # type: ignore[no-untyped-def]
        import boto3

        return boto3.client(
            service,
            endpoint_url=f"http://127.0.0.1:{port or self.port}",
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=REGION,
        )

    def create_bucket(self, name: str) -> None:
        """Create bucket ``name`` (3 to 63 lowercase letters, digits, dots, hyphens)."""
        self._client("s3").create_bucket(Bucket=name)

    def storage_options(self, *, port: Optional[int] = None, retry_timeout_s: int = 5, **overrides: str) -> Dict[str, str]:
        """What Lance needs to reach this server (through ``port``, a proxy, if given).

        Retries are capped (``client_retry_timeout``: Lance's default is 180 s with 10
        retries) so that a dead server fails a read within about ``retry_timeout_s``.

        Example:
            >>> S3Server().storage_options()["allow_http"]  # doctest: +SKIP
            'true'
        """
        options = {
            "aws_endpoint": f"http://127.0.0.1:{port or self.port}",
            "aws_access_key_id": self.access_key,
            "aws_secret_access_key": self.secret_key,
            "aws_region": REGION,
            "allow_http": "true",
            "client_max_retries": "3",
            "client_retry_timeout": str(retry_timeout_s),
        }
        options.update(overrides)
        return options

    def stop(self) -> None:
        """Kill the server (connections in progress are cut); idempotent."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)

    def __enter__(self) -> "S3Server":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class S3sFsServer(S3Server):
    """The `s3s-fs` server (Rust, from crates.io: ``cargo install s3s-fs@0.14.1 --features
    binary --locked``; later versions need a newer rustc) on 127.0.0.1, serving a temporary folder: a bucket is a sub-folder. It
    serves bytes an order of magnitude faster than moto, so a benchmark measures the
    loader rather than the server; it checks signatures with its one key pair.
    ``available()`` says whether the binary is on the PATH.

    Example:
        >>> if S3sFsServer.available():  # doctest: +SKIP
        ...     with S3sFsServer() as s3:
        ...         s3.create_bucket("data")
    """

    def __init__(self, *, start_timeout: float = 60.0) -> None:  # noqa: D107 - see the class
        import shutil
        import tempfile

        binary = shutil.which("s3s-fs")
        if binary is None:
            raise FileNotFoundError("s3s-fs is not installed: cargo install s3s-fs@0.14.1 --features binary --locked")
        self.port = free_port()
        self.auth = True
        self.access_key, self.secret_key = ACCESS_KEY, SECRET_KEY
        self.root = tempfile.mkdtemp(prefix="s3s-fs-")
        self._launch(
            [binary, "--host", "127.0.0.1", "--port", str(self.port), "--access-key", self.access_key,
             "--secret-key", self.secret_key, self.root],
            None,
            start_timeout,
        )

    @staticmethod
    def available() -> bool:
        import shutil

        return shutil.which("s3s-fs") is not None

    def create_bucket(self, name: str) -> None:
        os.makedirs(os.path.join(self.root, name), exist_ok=True)

    def stop(self) -> None:
        import shutil

        super().stop()
        shutil.rmtree(getattr(self, "root", ""), ignore_errors=True)


class LatencyProxy:
    """A TCP proxy on 127.0.0.1 that delays each request by ``delay_ms`` on its way in.

    A *request* is what the client sends after the connection was quiet (its reply
    already came back, or it is new): the proxy holds that first chunk for
    ``delay_ms`` and then forwards it and everything after it at once, so a request
    costs one delay however many packets it spans, and requests on separate
    connections are delayed in parallel. ``delay_ms`` may be changed while it runs.
    ``cut()`` closes every open connection (a dropped connection); ``stop()`` also
    stops accepting new ones. ``requests`` counts the requests delayed.

    Example:
        >>> with S3Server() as s3, LatencyProxy(s3.port, delay_ms=50) as proxy:  # doctest: +SKIP
        ...     opts = s3.storage_options(port=proxy.port)
    """

    def __init__(self, target_port: int, delay_ms: float = 0.0) -> None:
        self.target_port = target_port
        self.delay_ms = float(delay_ms)
        self.requests = 0
        self._lock = threading.Lock()
        self._socks: List[socket.socket] = []
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(256)
        self.port = int(self._listener.getsockname()[1])
        self._stopped = threading.Event()
        self._accepter = threading.Thread(target=self._accept, name="latency-proxy", daemon=True)
        self._accepter.start()

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            for s in (client, upstream):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self._socks += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()

    def _pump(self, client: socket.socket, upstream: socket.socket) -> None:
        # One thread per connection: HTTP/1.1 is one request at a time per connection,
        # so sleeping here delays only this connection's request.
        quiet = True  # the client's next bytes start a new request
        # poll, not select: Lance opens enough connections to pass select's 1024 fds.
        poller = select.poll()
        by_fd = {client.fileno(): client, upstream.fileno(): upstream}
        for fd in by_fd:
            poller.register(fd, select.POLLIN)
        try:
            while True:
                events = poller.poll(1000)
                if self._stopped.is_set():
                    return
                for fd, _ in events:
                    s = by_fd[fd]
                    data = s.recv(1 << 16)
                    if not data:
                        return
                    if s is client:
                        if quiet and self.delay_ms > 0:
                            with self._lock:
                                self.requests += 1
                            time.sleep(self.delay_ms / 1000.0)
                        quiet = False
                        upstream.sendall(data)
                    else:
                        quiet = True  # a reply: the client's next bytes are a new request
                        client.sendall(data)
        except OSError:
            return
        finally:
            with self._lock:
                self._socks = [s for s in self._socks if s is not client and s is not upstream]
            for s in (client, upstream):
                try:
                    s.close()
                except OSError:
                    pass

    def cut(self) -> None:
        """Close every open connection now, both ways (RST to the client)."""
        with self._lock:
            socks, self._socks = self._socks, []
        for s in socks:
            try:
                # SO_LINGER 0: the peer gets a reset, as when a network path dies.
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            try:
                s.close()
            except OSError:
                pass

    def stop(self) -> None:
        """Stop accepting and close every connection; idempotent."""
        self._stopped.set()
        try:
            self._listener.close()
        except OSError:
            pass
        self.cut()

    def __enter__(self) -> "LatencyProxy":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class ProxyProcess:
    """A :class:`LatencyProxy` in a subprocess (``python tests/s3server.py proxy``):
    ``port`` is where it listens, ``stop()`` (or the ``with``) ends it. Its delay is
    fixed: start one per delay.

    Example:
        >>> with S3Server() as s3, ProxyProcess(s3.port, delay_ms=50) as proxy:  # doctest: +SKIP
        ...     opts = s3.storage_options(port=proxy.port)
    """

    def __init__(self, target_port: int, delay_ms: float = 0.0, start_timeout: float = 30.0) -> None:
        self.target_port = target_port
        self.delay_ms = float(delay_ms)
        # stdin is a pipe the proxy watches: if this process dies, the proxy ends too.
        self._proc: Optional[subprocess.Popen] = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "proxy", str(target_port), "--delay-ms", str(delay_ms)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            self.port = self._read_port(start_timeout)
        except BaseException:
            self.stop()
            raise

    def _read_port(self, timeout: float) -> int:
        assert self._proc is not None and self._proc.stdout is not None
        ready, _, _ = select.select([self._proc.stdout], [], [], timeout)
        line = self._proc.stdout.readline() if ready else ""
        if not line.strip().isdigit():
            raise RuntimeError(f"the proxy process did not start (code {self._proc.poll()}, said {line!r})")
        return int(line)

    def stop(self) -> None:
        """End the proxy process (its connections close with it); idempotent."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)
        for f in (proc.stdin, proc.stdout):
            if f is not None:
                f.close()

    def __enter__(self) -> "ProxyProcess":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: Optional[List[str]] = None) -> int:
    """``python tests/s3server.py proxy TARGET_PORT [--delay-ms N]``: run a
    :class:`LatencyProxy` to 127.0.0.1:TARGET_PORT, print its port, and serve until
    stdin closes (or the process is killed).

    Example:
        $ python tests/s3server.py proxy 9000 --delay-ms 10
        41235
    """
    import argparse

    parser = argparse.ArgumentParser(description="A latency-injecting TCP proxy on 127.0.0.1.")
    sub = parser.add_subparsers(dest="command", required=True)
    proxy = sub.add_parser("proxy", help="delay each request to 127.0.0.1:TARGET_PORT")
    proxy.add_argument("target_port", type=int)
    proxy.add_argument("--delay-ms", type=float, default=0.0)
    args = parser.parse_args(argv)
    with LatencyProxy(args.target_port, delay_ms=args.delay_ms) as p:
        print(p.port, flush=True)
        sys.stdin.read()  # returns at EOF: the parent closed the pipe or exited
    return 0


if __name__ == "__main__":
    sys.exit(main())
