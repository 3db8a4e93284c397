"""The tests' own PostgreSQL: a throwaway cluster on a free loopback port, like their Mosquitto."""

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

from facilities.mosquitto import free_port
from tests.support.poll import WaitTimeoutError, wait_until

# Where Debian's postgresql-NN packages put the server binaries, one directory per version.
DEBIAN_VERSIONS = Path("/usr/lib/postgresql")
SERVER_BINARIES = ("initdb", "postgres", "pg_isready", "psql", "createdb")
# The port a system PostgreSQL listens on (Debian's package starts one): never ours.
SYSTEM_PORT = 5432
# The cluster's superuser. initdb --auth=trust: every local and loopback connection is let in.
USER = "postgres"
# initdb and postgres refuse to run as root; the tests may (CI does), and then run them as
# this system user, which Debian's postgresql package makes.
SERVER_OS_USER = "postgres"
# initdb takes 1-2 s and the server well under 1 s to accept connections on this machine;
# a loaded CI machine gets ten times that.
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
# How often a starting server is asked whether it accepts connections (each ask is a process).
READY_POLL_S = 0.05
MISSING = (
    "PostgreSQL's server (initdb, postgres) is missing:"
    " `make test` installs Debian's postgresql package"
)


class PostgresMissingError(AssertionError):
    """The server binaries, or the user to run them as, are not on this machine."""


def find_bindir(candidates: Iterable[Path] | None = None) -> Path:
    """The directory of the server binaries: the newest version under /usr/lib/postgresql,
    else `pg_config --bindir` (or the first of `candidates` that has them all)."""
    found = list(_debian_bindirs()) + _pg_config_bindir() if candidates is None else candidates
    for bindir in found:
        if all((bindir / name).is_file() for name in SERVER_BINARIES):
            return bindir
    raise PostgresMissingError(MISSING)


def _debian_bindirs() -> list[Path]:
    def version(bindir: Path) -> tuple[int, ...]:
        parts = bindir.parent.name.split(".")
        return tuple(int(p) for p in parts) if all(p.isdigit() for p in parts) else ()

    return sorted(DEBIAN_VERSIONS.glob("*/bin"), key=version, reverse=True)


def _pg_config_bindir() -> list[Path]:
    pg_config = shutil.which("pg_config")
    if pg_config is None:
        return []
    done = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False)
    return [Path(done.stdout.strip())] if done.returncode == 0 else []


def _server_os_user() -> pwd.struct_passwd | None:
    """Who runs initdb and postgres: None for the tests' own user, the `postgres` system user
    when the tests run as root."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(SERVER_OS_USER)
    except KeyError:
        raise PostgresMissingError(
            f"the tests run as root and PostgreSQL refuses to; there is no {SERVER_OS_USER}"
            " user to run it as: `make test` installs Debian's postgresql package, which makes it"
        ) from None


def _environment() -> dict[str, str]:
    """The caller's environment without its PG* variables: a PGHOST, PGPORT or PGSERVICE of
    the developer's must not lead a client to another server."""
    return {k: v for k, v in os.environ.items() if not k.startswith("PG")}


class PrivatePostgres:
    """One PostgreSQL cluster of the tests' own: `initdb` into a new temporary directory, the
    server on a free loopback port with its unix socket in that directory, nothing else on
    the machine touched. `stop()` ends the server and removes the directory."""

    def __init__(self) -> None:
        self.bindir = find_bindir()
        self.runas = _server_os_user()
        self.user = USER
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self._workdir: Path | None = None

    @property
    def workdir(self) -> Path:
        """The temporary directory: the cluster (`data`), its socket and its log."""
        if self._workdir is None:
            raise AssertionError("PrivatePostgres is not started")
        return self._workdir

    def start(self) -> "PrivatePostgres":
        """Make the cluster and start the server; wait until it accepts connections."""
        # Under the system's temporary directory, not pytest's: pytest's is private to the
        # tests' user, and the server's user must reach its own files.
        self._workdir = Path(tempfile.mkdtemp(prefix="facilities-postgres-"))
        try:
            self._initdb()
            self._serve()
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _initdb(self) -> None:
        (self.workdir / "sockets").mkdir()
        if self.runas is not None:
            for path in (self.workdir, self.workdir / "sockets"):
                os.chown(path, self.runas.pw_uid, self.runas.pw_gid)
        argv = [
            *(str(self.bindir / "initdb"), "--pgdata", str(self.workdir / "data")),
            *("--username", self.user, "--auth=trust", "--encoding=UTF8", "--locale=C"),
            "--no-sync",  # a throwaway cluster: not worth the seconds of flushing it to disk
        ]
        with self._log().open("ab") as log:
            done = subprocess.run(
                self._as_server(argv),
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                env=_environment(),
                check=False,
                timeout=START_TIMEOUT_S,
            )
        if done.returncode != 0:
            raise AssertionError(f"initdb failed ({done.returncode}): {self._log_tail()}")

    def _serve(self) -> None:
        self.port = free_port()
        argv = [
            *(str(self.bindir / "postgres"), "-D", str(self.workdir / "data")),
            *("-p", str(self.port), "-k", str(self.workdir / "sockets")),
            *("-c", "listen_addresses=127.0.0.1"),
            # each test's service holds a pool of its own, and a session runs many
            *("-c", "max_connections=200"),
        ]
        with self._log().open("ab") as log:
            self.process = subprocess.Popen(
                self._as_server(argv),
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                env=_environment(),
                # its own session, like the tests' Mosquitto: stopped by `stop()`, last
                start_new_session=True,
            )

    def _as_server(self, argv: Sequence[str]) -> list[str]:
        """`argv` as the server's user: setpriv only changes ids and execs, so the process
        we hold is the server itself (runuser and su would stay in between as its parent)."""
        if self.runas is None:
            return list(argv)
        ids = (f"--reuid={self.runas.pw_uid}", f"--regid={self.runas.pw_gid}", "--init-groups")
        return ["setpriv", *ids, *argv]

    def _wait_ready(self) -> None:
        try:
            wait_until(
                self._ready,
                timeout_s=START_TIMEOUT_S,
                what=f"PostgreSQL on 127.0.0.1:{self.port}",
                interval_s=READY_POLL_S,
            )
        except WaitTimeoutError:
            raise AssertionError(
                f"PostgreSQL did not accept connections on port {self.port}"
                f" in {START_TIMEOUT_S} s: {self._log_tail()}"
            ) from None

    def _ready(self) -> bool:
        if self.process is None or self.process.poll() is not None:
            raise AssertionError(f"postgres exited at start: {self._log_tail()}")
        return self._client("pg_isready", "--quiet", "--timeout=1").returncode == 0

    def _client(self, program: str, *args: str) -> subprocess.CompletedProcess[str]:
        """One of the client binaries, against this server only (by TCP: its address and
        port, whatever the environment says)."""
        argv = [str(self.bindir / program), "-h", "127.0.0.1", "-p", str(self.port)]
        return subprocess.run(
            [*argv, "-U", self.user, *args],
            capture_output=True,
            text=True,
            env=_environment(),
            check=False,
            timeout=START_TIMEOUT_S,
        )

    def _log(self) -> Path:
        return self.workdir / "postgres.log"

    def _log_tail(self) -> str:
        return self._log().read_text(errors="replace")[-1000:].strip()

    def url(self, dbname: str) -> str:
        """`postgresql://user@127.0.0.1:port/dbname` (no password: the cluster trusts)."""
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{dbname}"

    def fresh_database(self, name: str) -> str:
        """A new empty database `name`; its URL."""
        done = self._client("createdb", name)
        if done.returncode != 0:
            raise AssertionError(f"createdb {name} failed: {done.stderr.strip()}")
        return self.url(name)

    def query(self, dbname: str, sql: str) -> str:
        """Run `sql` with psql in `dbname`; its output unaligned, without headers
        (`SELECT 1` gives "1")."""
        done = self._client("psql", "-X", "-At", "-v", "ON_ERROR_STOP=1", "-d", dbname, "-c", sql)
        if done.returncode != 0:
            raise AssertionError(f"psql in {dbname} failed: {done.stderr.strip()}")
        return done.stdout.strip()

    def stop(self) -> None:
        """Stop the server (SIGINT: a fast shutdown, which disconnects its clients; SIGTERM
        would wait for them to leave) and remove the temporary directory."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                # the server and its backends: the process group of its own session
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.process = None
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
