"""Connection strings: which text names a PostgreSQL store, the store's own options in
it, and how to show it without its password.

A store is named by a libpq connection string: a ``postgresql://`` (or
``postgres://``) URL, or key=value pairs (``host=db dbname=app``).
:func:`looks_like_dsn` tells such text from a directory name for ``--store`` and
``DURABLE_STORE``. Either form may carry the store's own options besides the
connection's (``?schema=...&lease_ttl=...`` in a URL, ``schema=... lease_ttl=...``
pairs in a key=value string), so that one string names a configured store;
:func:`split_options` takes them out before the rest goes to libpq.

A DSN may hold a password, and nothing durable shows repeats it: :meth:`Dsn.redacted`
is the DSN with ``***`` in its place (for ``repr`` and the CLI), :meth:`Dsn.scrub`
takes it out of a server's message, and a DSN that libpq cannot parse is reported
without libpq's words if it holds a password (libpq quotes the text it stumbled on).

This module is imported with ``durable`` and so does not import psycopg at its
top: psycopg's parser is imported when a :class:`Dsn` is made, i.e. when a
``PostgresStore`` is.
"""

from __future__ import annotations

import re
import urllib.parse
from typing import Any

from .._core.errors import StoreError

#: Query parameters of a DSN URI (or pairs of a key=value string) that configure the
#: store rather than the connection.
STORE_OPTIONS = ("schema", "lease_ttl")

#: The keywords of libpq's key=value connection strings (PostgreSQL 17).
_LIBPQ_KEYWORDS = frozenset(
    (  # noqa: SIM905 - a list of words reads best as words
        "host hostaddr port dbname user password passfile require_auth channel_binding "
        "connect_timeout client_encoding options application_name fallback_application_name "
        "keepalives keepalives_idle keepalives_interval keepalives_count tcp_user_timeout "
        "replication gssencmode sslmode sslnegotiation requiressl sslcompression sslcert sslkey "
        "sslkeylogfile sslpassword sslcertmode sslrootcert sslcrl sslcrldir sslsni requirepeer "
        "ssl_min_protocol_version ssl_max_protocol_version krbsrvname gsslib gssdelegation "
        "service target_session_attrs load_balance_hosts"
    ).split()
)
_FIRST_KEY = re.compile(r"\s*([A-Za-z_]+)\s*=")
#: One ``key = value`` pair of a key=value string; a value is quoted '...' (with \\ escapes) or a word.
_PAIR = re.compile(r"(?:^|\s)([A-Za-z_]+)\s*=\s*('(?:[^'\\]|\\.)*'|[^\s']\S*|)")
_URL_SCHEMES = ("postgresql://", "postgres://")


def looks_like_dsn(text: str) -> bool:
    """Whether ``--store`` text names a PostgreSQL store rather than a directory: a
    ``postgresql://`` (or ``postgres://``) URL, or a libpq key=value string whose first
    key is one of libpq's (``host=db dbname=app``) or the store's (``schema=...``).

    A directory whose name starts like that can still be given as ``./host=x``.
    """
    if text.startswith(_URL_SCHEMES):
        return True
    first = _FIRST_KEY.match(text)
    return first is not None and (first.group(1) in _LIBPQ_KEYWORDS or first.group(1) in STORE_OPTIONS)


#: Text that starts like a URL (a scheme of two letters or more, then ":/"): never a
#: directory name anyone means ("C:/" is a drive, so one letter is not a scheme).
_URL_LIKE = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]+):/")
#: The password of a URL's user part, ``scheme://user:password@host``, however many slashes.
_URL_PASSWORD = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*:/*[^/:@\s]*:)[^@\s]*@")


def mistyped_url(text: str) -> str | None:
    """Why ``text``, which looks like a URL but not a PostgreSQL DSN, names no store;
    None for anything else. Such text must never become a directory: it would be made
    on disk, named after a password (``POSTGRESQL://u:secret@db/app``, ``postgresql:/db``)."""
    if looks_like_dsn(text):
        return None
    url = _URL_LIKE.match(text)
    if url is None:
        return None
    shown = redact_url(text)
    if url.group(1).lower() in ("postgresql", "postgres"):
        return (
            f"{shown!r} is not a PostgreSQL store: a PostgreSQL URL starts with postgresql:// "
            "(lower case, two slashes)"
        )
    return (
        f"{shown!r} looks like a {url.group(1)} URL; a durable store is a directory or a PostgreSQL "
        "DSN (postgresql://...). For a directory of that name, write ./ before it"
    )


def redact_url(text: str) -> str:
    """``text`` with the password of a URL's user part replaced by ``***``."""
    return _URL_PASSWORD.sub(r"\1***@", text)


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == "'":
        return re.sub(r"\\(.)", r"\1", value[1:-1])
    return value


def split_options(dsn: str) -> tuple[str, dict[str, str]]:
    """A DSN without the store's own options (``?schema=...&lease_ttl=...`` of a URL, or
    ``schema=... lease_ttl=...`` pairs of a key=value string), and those."""
    if not dsn.startswith(_URL_SCHEMES):
        options: dict[str, str] = {}

        def take(match: re.Match[str]) -> str:
            if match.group(1) not in STORE_OPTIONS:
                return match.group(0)
            options[match.group(1)] = _unquote(match.group(2))
            return ""

        return _PAIR.sub(take, dsn).strip(), options
    parts = urllib.parse.urlsplit(dsn)
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    options = {name: value for name, value in query if name in STORE_OPTIONS}
    rest = urllib.parse.urlencode([(name, value) for name, value in query if name not in STORE_OPTIONS])
    return urllib.parse.urlunsplit(parts._replace(query=rest)), options


def one_line(exc: BaseException) -> str:
    """The first line of an error's message (psycopg adds DETAIL and HINT lines)."""
    text = str(exc).strip().splitlines()
    return text[0].strip() if text else type(exc).__name__


class Dsn:
    """A connection string (without the store's options), parsed by libpq's rules.

    Raises:
        StoreError: libpq cannot parse it (the message quotes nothing of a DSN
            that holds a password).
    """

    def __init__(self, text: str) -> None:
        import psycopg  # noqa: PLC0415 - psycopg loads with the first store, not with durable
        from psycopg.conninfo import conninfo_to_dict  # noqa: PLC0415

        try:
            params = conninfo_to_dict(text)
        except psycopg.Error as exc:
            # libpq quotes the text it stumbled on, which may be part of a password.
            why = "(not shown: it holds a password)" if "password" in text else f"({one_line(exc)})"
            raise StoreError(
                f"invalid PostgreSQL connection string {why}: write a URL "
                "postgresql://user@host:port/dbname or libpq key=value pairs (host=... dbname=...; "
                "quote a value with spaces: password='a b')"
            ) from None
        #: The connection string as libpq gets it (it may hold a password: never show it).
        self.text = text
        #: libpq's parameters (``host``, ``port``, ``dbname``, ``password``, ...).
        self.params: dict[str, Any] = dict(params)

    @property
    def where(self) -> str:
        """``host:port/dbname`` of the server, for messages."""
        host = str(self.params.get("host") or self.params.get("hostaddr") or "localhost")
        port = str(self.params.get("port") or 5432)
        db = self.params.get("dbname")
        return f"{host}:{port}" + (f"/{db}" if db else "")

    def scrub(self, text: str) -> str:
        """``text`` (a server's message, say) with the password replaced by ``***``."""
        password = self.params.get("password")
        return text.replace(str(password), "***") if password else text

    def redacted(self) -> str:
        """The DSN with any password replaced by ``***``."""
        from psycopg.conninfo import make_conninfo  # noqa: PLC0415 - see Dsn.__init__

        dsn = self.text
        if "://" in dsn:
            parts = urllib.parse.urlsplit(dsn)
            netloc = parts.netloc
            if "@" in netloc:
                user, _, host = netloc.rpartition("@")
                if ":" in user:
                    user = user.partition(":")[0] + ":***"
                netloc = f"{user}@{host}"
            query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
            masked = [(k, "***" if k == "password" else v) for k, v in query]
            return urllib.parse.urlunsplit(
                parts._replace(netloc=netloc, query=urllib.parse.urlencode(masked, safe="*"))
            )
        params = dict(self.params)
        if "password" in params:
            params["password"] = "***"
        return make_conninfo("", **params)
