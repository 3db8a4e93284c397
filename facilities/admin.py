"""`facilities residents|staff add/revoke/list`: people and their tokens."""

# Written to the same database as the running service: a new or revoked token counts at
# once.

import time
from collections.abc import Sequence
from pathlib import Path

from facilities.access import Role
from facilities.errors import OperatorError, UsageError
from facilities.site import Site
from facilities.store import people
from facilities.store.db import SharedWriter, open_db


async def add(
    db: str | Path,
    role: Role,
    name: str,
    *,
    garages: Sequence[str] = (),
    site: Site | None = None,
    replacing: bool = False,
) -> people.Registered:
    """Register a person; residents need at least one garage of the site file. `replacing`:
    the people of this role and name before are removed in the same transaction (the demo's
    own, made again at each start)."""
    name = name.strip()
    if not name:
        raise UsageError("--name must not be empty")
    if role is Role.RESIDENT:
        if not garages:
            raise UsageError("a resident needs at least one --garage")
        unknown = sorted(g for g in set(garages) if site is None or g not in site.garages)
        if unknown:
            where = site.source if site else "the site file"
            raise UsageError(f"unknown garage {', '.join(unknown)} (not in {where})")
    conn = await open_db(db)
    try:
        async with SharedWriter(conn).transaction() as tx:
            if replacing:
                await people.remove_named(tx, role, name)
            return await people.add_person(
                tx, role, name, garages=frozenset(garages), now=time.time()
            )
    finally:
        await conn.close()


async def revoke(db: str | Path, role: Role, person_id: str) -> None:
    conn = await open_db(db)
    try:
        async with SharedWriter(conn).transaction() as tx:
            if not await people.revoke(tx, person_id, role, now=time.time()):
                raise OperatorError(f"no {role.value} {person_id} with a valid token in {db}")
    finally:
        await conn.close()


async def listing(db: str | Path, role: Role) -> list[people.Listed]:
    conn = await open_db(db)
    try:
        return await people.listing(conn, role)
    finally:
        await conn.close()
