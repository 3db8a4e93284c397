"""A page rendered: its template in the visitor's language, with the labels and headers."""

from datetime import datetime
from functools import cache
from typing import Annotated, Any

from fastapi import Path, Query, Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, PackageLoader, select_autoescape

from facilities.api.web.i18n import LANGUAGES, choose, translations
from facilities.api.web.labels import LOCAL_TIME, labels

LANG_COOKIE_DAYS = 365
# The pages load nothing from elsewhere and run no inline script: say so to the browser, so
# that an injected script or a tampered link cannot run or leak anything.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
Id = Annotated[str, Path(max_length=64)]
Lang = Annotated[str | None, Query(max_length=8, description="zh or en")]


@cache
def _environment(language: str) -> Environment:
    """One template environment per language: the catalog is fixed for each, so that
    concurrent requests in different languages never share gettext state."""
    env = Environment(
        loader=PackageLoader("facilities.api.web", "templates"),
        autoescape=select_autoescape(["html"]),
        extensions=["jinja2.ext.i18n"],
    )
    env.install_gettext_translations(translations(language), newstyle=True)  # type: ignore[attr-defined]
    return env


def render(
    request: Request, language: str, template: str, *, page: str, **context: Any
) -> HTMLResponse:
    """`template` in `language`; the language kept in a cookie when the visitor chose it."""
    body = (
        _environment(language)
        .get_template(template)
        .render(
            lang=language,
            page=page,
            path=request.url.path,
            labels=labels(language),
            **context,
        )
    )
    response = HTMLResponse(body)
    if request.query_params.get("lang") in LANGUAGES:
        # the visitor chose: keep it for the next pages (and the next visit)
        response.set_cookie(
            "lang", language, max_age=LANG_COOKIE_DAYS * 86400, samesite="lax", httponly=True
        )
    response.headers["Vary"] = "Accept-Language, Cookie"
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    return response


def language_of(request: Request, lang: str | None) -> str:
    """The visitor's language: `?lang=`, then the cookie, then Accept-Language."""
    return choose(lang, request.cookies.get("lang"), request.headers.get("accept-language"))


def name(language: str, item: Any) -> str:
    """A place's name in `language` (`name` in Chinese, `name_en` otherwise)."""
    return str(item.name if language == "zh" else item.name_en)


def local_time(when: datetime | None) -> str:
    """`HH:MM` on the district's clock; empty for no time."""
    return when.astimezone(LOCAL_TIME).strftime("%H:%M") if when else ""
