"""Residents and staff: their token hashes, residents' garages, revocation."""

import json
from collections.abc import Iterable
from dataclasses import dataclass

from facilities.access import Person, Role, hash_token, new_person_id, new_token
from facilities.store.sql import Connection


@dataclass(frozen=True, slots=True)
class Registered:
    """A person just added, with the token shown to the operator once."""

    person: Person
    token: str


@dataclass(frozen=True, slots=True)
class Listed:
    person: Person
    created_at: float
    revoked_at: float | None


async def add_person(
    conn: Connection,
    role: Role,
    name: str,
    *,
    garages: frozenset[str] = frozenset(),
    now: float,
) -> Registered:
    """Store a new person with a new token (only its hash); the caller commits."""
    token, person_id = new_token(), new_person_id(role)
    await conn.execute(
        "INSERT INTO people (id, role, name, token_hash, created_at) VALUES (?, ?, ?, ?, ?)",
        (person_id, role.value, name, hash_token(token), now),
    )
    await conn.executemany(
        "INSERT INTO resident_garages (person, garage) VALUES (?, ?)",
        [(person_id, garage) for garage in sorted(garages)],
    )
    return Registered(Person(person_id, role, name, garages), token)


async def remove_named(conn: Connection, role: Role, name: str) -> int:
    """Remove the people of `role` called `name`, with their garages (their requests' audit
    keeps their ids); how many; the caller commits."""
    await conn.execute(
        "DELETE FROM resident_garages WHERE person IN"
        " (SELECT id FROM people WHERE role = ? AND name = ?)",
        (role.value, name),
    )
    cursor = await conn.execute(
        "DELETE FROM people WHERE role = ? AND name = ?", (role.value, name)
    )
    return cursor.rowcount


async def revoke(conn: Connection, person_id: str, role: Role, *, now: float) -> bool:
    """Revoke a person's token; False when there is no such person (or already revoked)."""
    cursor = await conn.execute(
        "UPDATE people SET revoked_at = ? WHERE id = ? AND role = ? AND revoked_at IS NULL",
        (now, person_id, role.value),
    )
    return cursor.rowcount == 1


async def by_token(conn: Connection, token: str) -> Person | None:
    """The person a presented token belongs to, unless unknown or revoked."""
    async with conn.execute(
        "SELECT id, role, name FROM people WHERE token_hash = ? AND revoked_at IS NULL",
        (hash_token(token),),
    ) as cursor:
        row = await cursor.fetchone()
    if row is None:
        return None
    person_id, role, name = row
    return Person(person_id, Role(role), name, await _garages(conn, person_id))


async def listing(conn: Connection, role: Role) -> list[Listed]:
    async with conn.execute(
        "SELECT id, name, created_at, revoked_at FROM people WHERE role = ? ORDER BY created_at",
        (role.value,),
    ) as cursor:
        rows = list(await cursor.fetchall())
    return [
        Listed(Person(pid, role, name, await _garages(conn, pid)), created, revoked)
        for pid, name, created, revoked in rows
    ]


async def names(conn: Connection, person_ids: Iterable[str]) -> dict[str, str]:
    """The names of these people (revoked ones too: a name stays true of what they did);
    an id no longer in the table (removed) is left out."""
    wanted = json.dumps(sorted(set(person_ids)))
    async with conn.execute(
        "SELECT id, name FROM people WHERE id IN (SELECT value FROM json_each(?))", (wanted,)
    ) as cursor:
        rows = await cursor.fetchall()
    return {str(person_id): str(name) for person_id, name in rows}


async def _garages(conn: Connection, person_id: str) -> frozenset[str]:
    async with conn.execute(
        "SELECT garage FROM resident_garages WHERE person = ?", (person_id,)
    ) as cursor:
        return frozenset(row[0] for row in await cursor.fetchall())
