"""A throwaway PostgreSQL server for the tests and benchmarks: Debian's
`postgresql` package, `initdb` + `pg_ctl` in a temporary folder, listening
on a free loopback port, with password authentication over TCP.

initdb refuses to run as root (CI runs as root), so as root the server runs
as the unprivileged user `nobody` through `runuser`; its folder is made by
us and handed to that user.
"""

from __future__ import annotations

import glob
import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path

USER = "harness"
PASSWORD = "s3cret-pw-Zq81"  # a test server's password; the tests check it never leaks


def find_bin_dir() -> Path | None:
    """The newest /usr/lib/postgresql/*/bin holding initdb and pg_ctl (or PATH's)."""
    dirs = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda d: int(Path(d).parent.name or 0))
    for d in reversed(dirs):
        if Path(d, "initdb").exists() and Path(d, "pg_ctl").exists():
            return Path(d)
    found = shutil.which("initdb")
    return Path(found).parent if found and shutil.which("pg_ctl") else None


def _traversable_tmp() -> str:
    """A temporary folder the server's user (``nobody`` when we are root) can reach:
    the usual one, unless its mode shuts others out (a /tmp left at 0700), then /var/tmp."""
    base = tempfile.gettempdir()
    if os.geteuid() == 0 and not os.stat(base).st_mode & 0o001 and os.path.isdir("/var/tmp"):
        return "/var/tmp"
    return base


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PgServer:
    def __init__(self, bin_dir: Path):
        self.bin = bin_dir
        self.root = Path(tempfile.mkdtemp(prefix="harness-pg-", dir=_traversable_tmp()))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.port = _free_port()
        self.as_root = os.geteuid() == 0
        os.chmod(self.root, 0o755)
        if self.as_root:
            shutil.chown(self.root, "nobody")

    def command(self, *args) -> list[str]:
        cmd = [str(self.bin / args[0]), *map(str, args[1:])]
        return ["runuser", "-u", "nobody", "--", *cmd] if self.as_root else cmd

    def _run(self, *args, check=True):
        return subprocess.run(self.command(*args), capture_output=True, text=True, check=check, timeout=120)

    def start_command(self) -> list[str]:
        opts = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
        return self.command("pg_ctl", "-D", self.data, "-l", self.log, "-w", "-t", "60", "-o", opts, "start")

    def stop_command(self, mode: str = "fast") -> list[str]:
        return self.command("pg_ctl", "-D", self.data, "-m", mode, "-w", "stop")

    def start(self) -> "PgServer":
        pwfile = self.root / "pw"
        pwfile.write_text(PASSWORD + "\n")
        if self.as_root:
            shutil.chown(pwfile, "nobody")
        self._run("initdb", "-D", self.data, "-U", USER, "--pwfile", pwfile, "--auth-host=scram-sha-256",
                  "--auth-local=trust", "-E", "UTF8", "--no-sync")
        pwfile.unlink()
        self.resume()
        return self

    def resume(self) -> None:
        subprocess.run(self.start_command(), capture_output=True, text=True, check=True, timeout=120)

    def stop(self, mode: str = "fast") -> None:
        subprocess.run(self.stop_command(mode), capture_output=True, text=True, timeout=120)

    def destroy(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    def url(self, db: str = "postgres", *, password: str | None = None) -> str:
        auth = f"{USER}:{password}" if password else USER
        return f"postgresql://{auth}@127.0.0.1:{self.port}/{db}"

    def create_database(self, name: str | None = None) -> str:
        """A new, empty database; returns its URL (no password: PGPASSWORD supplies it)."""
        import psycopg

        name = name or "t_" + uuid.uuid4().hex[:12]
        with psycopg.connect(host="127.0.0.1", port=self.port, user=USER, password=PASSWORD, dbname="postgres",
                             autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


@contextlib.contextmanager
def benchmark_database(name: str, url: str | None = None):
    """For the store benchmarks: ``url`` as given, else a new database on a
    throwaway server (PGPASSWORD set for it, the server destroyed after), or
    None, said in one line, where the server binaries are missing."""
    if url is not None:
        yield url
        return
    bin_dir = find_bin_dir()
    if bin_dir is None:
        print("postgresql: skipped (no initdb/pg_ctl; install Debian's postgresql or pass --url)")
        yield None
        return
    server = PgServer(bin_dir).start()
    try:
        os.environ["PGPASSWORD"] = PASSWORD
        yield server.create_database(name)
    finally:
        server.destroy()
