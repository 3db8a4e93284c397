"""Options declared once, as settings fields: the command line and environment derive from them."""

import argparse
import logging
import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import BeforeValidator, SecretStr, ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from facilities.errors import UsageError
from facilities.logs import LogFormat

ENV_PREFIX = "FACILITIES_"
OptionsT = TypeVar("OptionsT", bound="Options")


@dataclass(frozen=True, slots=True)
class Option:
    """How a settings field is said: `--flag`, or FACILITIES_FLAG in the environment; `parse`
    reads its text (argparse's `type`: a value it refuses is exit 2, naming the option), by
    default as the field's type when it is `int` or `float`, else as text."""

    flag: str
    parse: Callable[[str], Any] | None = None
    repeatable: bool = False  # said again: the values join, comma-separated

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.flag.upper().replace("-", "_")


def positive(kind: Callable[[str], Any]) -> Callable[[str], Any]:
    """A finite number above 0 (nothing may be kept for ever, or not at all)."""

    def parse(text: str) -> Any:
        value = kind(text)
        if not (value > 0 and math.isfinite(value)):
            raise argparse.ArgumentTypeError(f"{text!r}: must be a finite number above 0")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its error
    return parse


def parse_log_level(text: str) -> str:
    """`--log-level`: a level name of `logging`, in any case."""
    if not isinstance(logging.getLevelName(text.upper()), int):
        raise argparse.ArgumentTypeError(f"{text!r}: expected DEBUG, INFO, WARNING or ERROR")
    return text.upper()


def parse_log_format(text: str) -> LogFormat:
    """`--log-format`: text (for a terminal) or json (one object a line), in any case."""
    try:
        return LogFormat(text.lower())
    except ValueError:
        choices = " or ".join(f.value for f in LogFormat)
        raise argparse.ArgumentTypeError(f"{text!r}: expected {choices}") from None


def as_text(default: str) -> Any:
    """A default written as on the command line (`./var/facilities.db`), read by the field's
    validation like a flag's text, and shown as written in `--help`."""
    return default


def from_text(parse: Callable[[str], Any]) -> BeforeValidator:
    """A field given as text (the command line, the environment) is read by `parse`; one
    given as a value (a test, the demo) is taken as it is."""
    return BeforeValidator(lambda value: parse(value) if isinstance(value, str) else value)


class _Environment(PydanticBaseSettingsSource):
    """FACILITIES_<OPTION> for each field: named for its option, not for the field
    (`connect_timeout_s` is FACILITIES_CONNECT_TIMEOUT)."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # __call__ reads them all

    def __call__(self) -> dict[str, Any]:
        assert issubclass(self.settings_cls, Options)  # only Options use it
        return {
            name: os.environ[option.env]
            for name, option, _ in self.settings_cls.options()
            if option.env in os.environ
        }


class Options(BaseSettings):
    """A command's settings: given values first, then FACILITIES_*, then the defaults (each
    written as on the command line). Frozen; an unknown name is refused."""

    model_config = SettingsConfigDict(frozen=True, extra="forbid", validate_default=True)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, _Environment(settings_cls)

    @classmethod
    def options(cls) -> Iterator[tuple[str, Option, FieldInfo]]:
        """(field name, its option, the field) for every field, in declaration order."""
        for name, field in cls.model_fields.items():
            option = next(meta for meta in field.metadata if isinstance(meta, Option))
            yield name, option, field


def default_text(field: FieldInfo) -> str:
    """A field's default as it would be written on the command line."""
    value = field.get_default(call_default_factory=True)
    return value.get_secret_value() if isinstance(value, SecretStr) else str(value)


def _reader(field: FieldInfo) -> Callable[[str], Any]:
    """argparse's `type` for a field without its own `parse`: a number is read (and refused,
    in argparse's words) on the command line; anything else is text the field's own
    validation reads."""
    return field.annotation if field.annotation in (int, float) else str  # type: ignore[return-value]


def add_options(
    parser: argparse.ArgumentParser, model: "type[Options]", *, repeated: bool = False
) -> None:
    """`--flag` for each field of `model`, defaulting to FACILITIES_FLAG, else to the field's
    default; its `parse` reads the text, so a bad flag or variable is refused alike (exit 2).
    The help shows the declared default, never the environment's value (it may be a secret).

    `repeated`: options the main parser already has, said again after a command; given there
    they win, and left out they have no default, so that they leave the main parser's value
    (argparse copies a command's defaults over it)."""
    for name, option, field in model.options():
        default = default_text(field)
        described = f"{field.description} (env {option.env}; default {default})"
        parser.add_argument(
            f"--{option.flag}",
            dest=name,
            metavar=option.flag.upper().replace("-", "_"),
            default=argparse.SUPPRESS if repeated else os.environ.get(option.env, default),
            type=option.parse or _reader(field),
            help=described.replace("%", "%%"),
            action=_Repeated if option.repeatable else "store",
        )


class _Repeated(argparse.Action):
    """A repeatable option: each use adds its text, comma-separated; the first use replaces
    the default (or the environment's value)."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        seen = f"_{self.dest}_given"
        current = getattr(namespace, self.dest, None) if getattr(namespace, seen, False) else None
        setattr(namespace, self.dest, f"{current},{values}" if current else str(values))
        setattr(namespace, seen, True)


def from_arguments(args: argparse.Namespace, model: type[OptionsT]) -> OptionsT:
    """`model` from the options `add_options` added: one line naming the option if refused."""
    try:
        return model(**{name: getattr(args, name) for name, _, _ in model.options()})
    except ValidationError as exc:
        flags = {name: option.flag for name, option, _ in model.options()}
        first = exc.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else ""
        raise UsageError(f"--{flags.get(field, field)}: {first['msg']}") from None
