"""Who owns a partition: one holder at a time, let go when the holder is gone
(docs/scaling.md, "Failover")."""

import asyncio
from pathlib import Path

import psycopg

from facilities.ownership import FileOwnership, PgOwnership, lock_key, ownership_of
from facilities.partition import Partition

HALF = Partition(0, 2)


async def test_a_lock_file_has_one_holder_until_it_lets_go(tmp_path: Path) -> None:
    path = HALF.lock_path(tmp_path / "facilities.db")
    first, second = FileOwnership(path), FileOwnership(path)
    assert await first.try_acquire()
    assert not await second.try_acquire()
    waiting = asyncio.create_task(second.acquire())
    await first.release()
    assert await asyncio.wait_for(waiting, 2) < 2
    assert path.read_text().strip().isdigit()  # the holder's pid, for an operator
    await second.release()


def test_the_store_decides_how_a_partition_is_owned(tmp_path: Path) -> None:
    db = tmp_path / "f.db"
    owned = ownership_of(HALF, f"sqlite://{db}")  # sqlite:///tmp/…
    assert isinstance(owned, FileOwnership)
    assert owned.path == tmp_path / "f.db.partition-0-of-2.lock"
    assert isinstance(ownership_of(HALF, "postgresql://u@127.0.0.1:1/x"), PgOwnership)
    assert lock_key(HALF) != lock_key(Partition(1, 2))
    assert lock_key(HALF) == lock_key(Partition(0, 2))


async def test_an_advisory_lock_has_one_holder_and_goes_with_its_session(pg_url: str) -> None:
    first, second = PgOwnership(pg_url, HALF), PgOwnership(pg_url, HALF)
    other = PgOwnership(pg_url, Partition(1, 2))
    try:
        assert await first.try_acquire()
        assert not await second.try_acquire()
        assert await other.try_acquire()  # another partition, another key
        watching = asyncio.create_task(first.watch())
        waiting = asyncio.create_task(second.acquire())
        # the holder's session ends as when its machine is gone: the server lets the lock go
        assert first._conn is not None
        pid = first._conn.info.backend_pid
        async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as admin:
            await admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        assert await asyncio.wait_for(waiting, 5) < 5
        await asyncio.wait_for(watching, 5)  # and the old holder knows it must stop
    finally:
        for owned in (first, second, other):
            await owned.release()
