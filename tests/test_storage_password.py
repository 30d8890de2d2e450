"""A PostgreSQL server that asks for a password the URL leaves out: the one line says where to put it."""

from __future__ import annotations

import subprocess
import sys


class _PasswordServer:
    """A PostgreSQL server as libpq sees it at login: it asks for a password and refuses any it is sent (and
    answers nothing else)."""

    def __init__(self) -> None:
        import socket
        import threading

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                try:
                    while head := conn.recv(8, 0x100):  # MSG_WAITALL: length and protocol code
                        size, code = int.from_bytes(head[:4], "big"), int.from_bytes(head[4:8], "big")
                        conn.recv(size - 8, 0x100) if size > 8 else b""
                        if code in (80877103, 80877104):  # SSLRequest, GSSENCRequest: not here
                            conn.sendall(b"N")
                        else:  # the startup message: AuthenticationCleartextPassword
                            conn.sendall(b"R" + (8).to_bytes(4, "big") + (3).to_bytes(4, "big"))
                            if conn.recv(1024):  # a password (any): refused, as a wrong one is
                                fields = b"SFATAL\0VFATAL\0C28P01\0Mpassword authentication failed for user \"advisor\"\0\0"
                                conn.sendall(b"E" + (4 + len(fields)).to_bytes(4, "big") + fields)
                            break
                except OSError:
                    pass


def test_a_url_without_the_password_the_server_asks_for_says_where_to_put_it(tmp_path):
    """The `next:` commands tune prints leave the password out (to be found in PGPASSWORD or ~/.pgpass): run
    without either, they said "fe_sendauth: no password supplied; check the URL and that the server runs"."""
    import os

    server = _PasswordServer()
    url = f"postgresql+psycopg2://advisor@127.0.0.1:{server.port}/advisor"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")} | {"PGPASSFILE": str(tmp_path / "none")}
    for args in (("studies", "--storage", url), ("pareto", "s", "--storage", url),
                 ("tune", "bundled", "--storage", url, "--trials", "1")):
        r = subprocess.run([sys.executable, "-m", "advisor", *args], capture_output=True, text=True, cwd=tmp_path,
                           env=env, timeout=60)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        line = r.stderr.strip().splitlines()[-1]
        assert "no password supplied" in line and "PGPASSWORD" in line and "~/.pgpass" in line, (args, line)
        assert "that the server runs" not in line, (args, line)


def test_a_wrong_password_from_pgpassword_or_the_password_file_says_so(tmp_path):
    """The `next:` commands leave the password out of the URL; run with a stale PGPASSWORD (or ~/.pgpass), the
    refusal said "password authentication failed for user ...; check the URL and that the server runs" - a URL
    holding no password. Now it names where the password came from; a wrong password in the URL still says to
    check the URL."""
    import os

    server = _PasswordServer()
    url = f"postgresql+psycopg2://advisor@127.0.0.1:{server.port}/advisor"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")} | {"PGPASSFILE": str(tmp_path / "none"),
                                                                            "PGPASSWORD": "stale"}
    for args in (("studies", "--storage", url), ("tune", "bundled", "--storage", url, "--trials", "1"),
                 ("studies", "--storage", url.replace("advisor@", "advisor:wrong@"))):
        r = subprocess.run([sys.executable, "-m", "advisor", *args], capture_output=True, text=True, cwd=tmp_path,
                           env=env, timeout=60)
        assert r.returncode == 2 and "Traceback" not in r.stderr, (args, r.stdout, r.stderr)
        line = r.stderr.strip().splitlines()[-1]
        assert line.startswith("error: ") and 'password authentication failed for user "advisor"' in line, line
        if "wrong@" in args[-1]:
            assert "check the URL" in line and "PGPASSWORD" not in line, line
        else:
            assert "PGPASSWORD" in line and "~/.pgpass" in line and "check the URL" not in line, (args, line)
