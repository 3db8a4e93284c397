"""Languages of the pages: Babel catalogs and the choice of language for a request."""

# English is the source language; Chinese is `zh`. The .po files are compiled when loaded.

import gettext
import io
from functools import cache
from importlib import resources

from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po

LANGUAGES = ("zh", "en")
# The district is in Shanghai: a browser that states no preference (no Accept-Language, or
# `*`) gets Chinese; one that asks only for languages we lack gets English.
DEFAULT = "zh"
OTHERWISE = "en"


@cache
def translations(language: str) -> gettext.NullTranslations:
    """The catalog of `language` (English: the messages as written)."""
    if language == "en":
        return gettext.NullTranslations()
    locale = resources.files("facilities.api.web").joinpath("locale")
    po = locale.joinpath(f"{language}/LC_MESSAGES/messages.po")
    with po.open("rb") as source:
        catalog = read_po(source, locale=language)
    compiled = io.BytesIO()
    write_mo(compiled, catalog)
    compiled.seek(0)
    return gettext.GNUTranslations(compiled)


def _accepted(header: str) -> list[tuple[float, str]]:
    """`zh-CN,zh;q=0.9,en;q=0.8` → [(1.0, 'zh-cn'), (0.9, 'zh'), (0.8, 'en')], best first."""
    found = []
    for position, part in enumerate(header.split(",")):
        tag, _, params = part.strip().partition(";")
        quality = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if tag:
            found.append((quality, -position, tag.lower()))
    found.sort(reverse=True)
    return [(quality, tag) for quality, _, tag in found]


def choose(query: str | None, cookie: str | None, accept_language: str | None) -> str:
    """`?lang=` first, then the visitor's earlier choice (cookie), then the browser's most
    preferred of Chinese and English (`*`: the district's Chinese); Chinese when it states
    no preference, English when it asks only for other languages."""
    for explicit in (query, cookie):
        if explicit in LANGUAGES:
            return explicit
    accepted = _accepted(accept_language or "")
    refused = {tag.split("-")[0] for quality, tag in accepted if quality <= 0}
    for quality, tag in accepted:
        if quality <= 0:
            continue
        if tag == "*":  # any language: ours first, unless refused
            return next((lang for lang in LANGUAGES if lang not in refused), OTHERWISE)
        primary = tag.split("-")[0]
        if primary in LANGUAGES:
            return primary
    return OTHERWISE if accepted else DEFAULT
