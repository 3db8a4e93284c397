"""Where each key of a TOML file is: the line a site file's problem is reported at."""

import re


class LineIndex:
    """Maps a location such as ('station', 3, 'ports') to the line that defines it."""

    _HEADER = re.compile(r"^\s*(\[\[?)\s*([A-Za-z0-9_.-]+)\s*\]\]?")
    _KEY = re.compile(r'^\s*("?)([A-Za-z0-9_-]+)\1\s*=')

    def __init__(self, text: str) -> None:
        self.lines: dict[tuple[str | int, ...], int] = {}
        counts: dict[str, int] = {}
        table: tuple[str | int, ...] = ()
        for number, line in enumerate(text.splitlines(), start=1):
            header = self._HEADER.match(line)
            if header:
                table = self._table(header.group(1), header.group(2).split("."), counts, table)
                self.lines.setdefault(table, number)
                continue
            key = self._KEY.match(line)
            if key:
                self.lines.setdefault((*table, key.group(2)), number)

    @staticmethod
    def _table(
        bracket: str, parts: list[str], counts: dict[str, int], current: tuple[str | int, ...]
    ) -> tuple[str | int, ...]:
        if bracket == "[[" and len(parts) == 1:
            index = counts.get(parts[0], -1) + 1
            counts[parts[0]] = index
            return (parts[0], index)
        if len(parts) == 2 and parts[0] in counts and current[:1] == (parts[0],):
            return (*current[:2], parts[1])
        return tuple(parts)

    def line_of(self, loc: tuple[str | int, ...]) -> int | None:
        for end in range(len(loc), 0, -1):
            found = self.lines.get(loc[:end])
            if found is not None:
                return found
        return None
