"""`--partition K/N`: which devices an instance owns (docs/scaling.md, "Several instances")."""

import re
import zlib
from dataclasses import dataclass, replace
from pathlib import Path

from facilities.errors import UsageError
from facilities.site import Site

_FORM = re.compile(r"(\d{1,6})/(\d{1,6})")


@dataclass(frozen=True, slots=True)
class Partition:
    """Partition `index` of `count`. The unit of ownership is a garage with every station
    inside it (smoke in a garage cuts all of them: one process must judge them together), or
    a station in no garage; its id hashes to a partition with CRC-32, the same in every
    process and every version (Python's `hash()` of a string changes with each process)."""

    index: int
    count: int

    @classmethod
    def parse(cls, text: str) -> "Partition | None":
        """`K/N` with 0 <= K < N; '' for none (the instance owns everything)."""
        if not text:
            return None
        found = _FORM.fullmatch(text.strip())
        if found is None:
            raise UsageError(f"--partition {text[:40]!r}: expected K/N, such as 0/2")
        index, count = int(found[1]), int(found[2])
        if count < 1 or index >= count:
            raise UsageError(f"--partition {text[:40]!r}: K must be from 0 to N-1 and N at least 1")
        return cls(index, count)

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    @property
    def slug(self) -> str:
        """`0-of-2`: the partition in a file name, a topic level or a client id."""
        return f"{self.index}-of-{self.count}"

    def of_key(self, key: str) -> int:
        """The partition a unit's key (garage or station id) hashes to."""
        return zlib.crc32(key.encode()) % self.count

    def owns(self, site: Site, device: str) -> bool:
        """Whether `device` (a station or garage of `site`, or one the site no longer names:
        then by its own id) is in this partition."""
        return self.of_key(unit_of(site, device)) == self.index

    def owned(self, site: Site, *, mine: bool = True) -> Site:
        """`site` with only the stations and garages this partition owns (`mine` False: only
        those it does not); the communities and thresholds as they are."""
        return replace(
            site,
            garages={k: v for k, v in site.garages.items() if self.owns(site, k) is mine},
            stations={k: v for k, v in site.stations.items() if self.owns(site, k) is mine},
        )

    def lock_path(self, db: Path) -> Path:
        """The lock file beside the database whose holder owns the partition."""
        return db.with_name(f"{db.name}.partition-{self.slug}.lock")


def unit_of(site: Site, device: str) -> str:
    """The key of `device`'s unit: its garage's id for a station inside one, else its own."""
    station = site.stations.get(device)
    if station is not None and station.garage is not None:
        return station.garage
    return device
