"""The tests' own PostgreSQL: ours (a throwaway cluster on a free port), an empty database per
test, and gone once stopped; never a server that happens to run on the machine."""

import socket
import tempfile
from pathlib import Path

import pytest

from tests.support.postgres import (
    SYSTEM_PORT,
    PostgresMissingError,
    PrivatePostgres,
    find_bindir,
)

USER_TABLES = (
    "SELECT count(*) FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema')"
)


def _dbname(url: str) -> str:
    return url.rsplit("/", 1)[1]


def test_the_server_is_ours(postgres: PrivatePostgres, pg_url: str) -> None:
    assert postgres.port != SYSTEM_PORT
    assert pg_url.startswith(f"postgresql://{postgres.user}@127.0.0.1:{postgres.port}/")
    assert postgres.workdir.is_relative_to(tempfile.gettempdir())
    shown = postgres.query(_dbname(pg_url), "SHOW data_directory")
    assert Path(shown) == postgres.workdir / "data"


def test_each_test_gets_an_empty_database_of_its_own(
    postgres: PrivatePostgres, pg_url: str
) -> None:
    mine = _dbname(pg_url)
    assert postgres.query(mine, USER_TABLES) == "0"
    postgres.query(mine, "CREATE TABLE t (x int)")
    other = _dbname(postgres.fresh_database("another_one"))
    assert other != mine
    assert postgres.query(other, USER_TABLES) == "0"
    assert postgres.query(mine, USER_TABLES) == "1"


def test_a_stopped_server_is_gone() -> None:
    second = PrivatePostgres().start()
    try:
        assert second.query("postgres", "SELECT 1") == "1"
        workdir, port = second.workdir, second.port
    finally:
        second.stop()
    assert second.process is None
    assert not workdir.exists()
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", port)) != 0


def test_missing_binaries_say_what_installs_them(tmp_path: Path) -> None:
    (tmp_path / "initdb").touch()  # a directory with some of them only
    with pytest.raises(PostgresMissingError, match="`make test` installs Debian's postgresql"):
        find_bindir([tmp_path])
