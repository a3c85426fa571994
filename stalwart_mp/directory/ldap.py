"""An LDAP directory (read-only): accounts, groups and lists live in an LDAP server.

Lookups are filter templates (``filter.name``, ``filter.email``, ``filter.domain``,
``filter.groups``) whose ``?`` is replaced by the RFC 4515 §3-escaped value, and the entry's
attributes are mapped to a ``Principal`` by the ``attributes.*`` settings. All LDAP traffic
runs on the pool's threads (``ldap_pool.LdapPool``); an unreachable server raises
``DirectoryUnavailable`` naming the URL.

Passwords, ``bind.auth``:

- ``"bind"``: ``verify_password`` binds as the principal's DN (found again with
  ``filter.name``) on a connection kept for that purpose; the LDAP server checks the
  password and applies its own policies (lockout, expiry). The password attribute is not
  read at all, so the service account needs no access to it.
- ``"hash"``: the password attribute (``attributes.secret``) is read into
  ``Principal.secrets`` and verified here by ``passwords.verify_password`` ({SSHA}, {CRYPT},
  bcrypt...). The service account must be allowed to read it.

An empty password is refused in both modes (an "unauthenticated" simple bind succeeds).

Disabled accounts: ``attributes.disabled`` (default ``pwdAccountLockedTime``, the ppolicy
lock of RFC draft-behera-ldap-password-policy). See ``is_disabled_value``.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

from ldap3 import BASE, SUBTREE, Connection
from ldap3.core.exceptions import LDAPInvalidDnError
from ldap3.utils.conv import escape_filter_chars
from ldap3.utils.dn import parse_dn

from stalwart_mp.directory.base import Directory, DirectoryUnavailable, Principal, PrincipalType
from stalwart_mp.directory.ldap_pool import LdapPool
from stalwart_mp.directory.ldap_settings import DEFAULTS

log = logging.getLogger(__name__)

# RFC 4511 §4.1.9 result codes with a meaning for lookups.
_SUCCESS, _SIZE_LIMIT_EXCEEDED, _NO_SUCH_OBJECT = 0, 4, 32

_PERMANENT_LOCK = "000001010000Z"  # ppolicy: locked by an administrator, until unlocked
_GENERALIZED_TIME = re.compile(r"\d{12,14}([.,]\d+)?(Z|[+-]\d{4})")
_FALSE = {"", "false", "0", "no", "off"}
_MAX_RESULTS = 1000  # an address owned by more entries than this is a broken directory
_MAX_AMBIGUOUS = 10  # entries read when filter.name matches more than one


def is_disabled_value(values: list[str]) -> bool:
    """Whether the values of ``attributes.disabled`` disable a principal.

    A boolean-style attribute (``nsAccountLock: TRUE``) disables unless FALSE/0/no/off.
    A time (ppolicy's ``pwdAccountLockedTime``) disables only when it is the permanent
    administrative lock: a temporary lockout after failed logins must not make mail
    bounce — the server refuses the binds by itself while it lasts.
    """
    for value in values:
        value = value.strip()
        if value == _PERMANENT_LOCK:
            return True
        if _GENERALIZED_TIME.fullmatch(value) or value.lower() in _FALSE:
            continue
        return True
    return False


@dataclass(slots=True)
class LdapConfig:
    """The settings of one ``[directory."NAME"]`` table of type "ldap", defaults applied."""

    urls: list[str]
    base_dn: str
    bind_dn: str
    bind_secret: str
    auth: str  # "bind" | "hash"
    starttls: bool
    allow_invalid_certs: bool
    timeout: float
    pool_size: int
    filter_name: str
    filter_email: str
    filter_domain: str  # "" = only ``domains``
    filter_groups: str  # "" = only ``attr_groups``
    domains: tuple[str, ...]
    attr_name: tuple[str, ...]
    attr_class: tuple[str, ...]
    attr_email: tuple[str, ...]
    attr_email_alias: tuple[str, ...]
    attr_secret: tuple[str, ...]
    attr_description: tuple[str, ...]
    attr_groups: tuple[str, ...]
    attr_quota: tuple[str, ...]
    attr_members: tuple[str, ...]
    attr_disabled: tuple[str, ...]
    class_group: tuple[str, ...]
    class_list: tuple[str, ...]

    @classmethod
    def from_table(cls, table: dict[str, Any]) -> LdapConfig:
        """From a flat table as ``Config.table`` returns it; missing keys take the declared
        defaults. A single URL may be given as a string."""
        def get(key: str) -> Any:
            return table[key] if key in table else DEFAULTS[key]

        def attrs(key: str) -> tuple[str, ...]:
            value = get(f"attributes.{key}")
            return (value,) if isinstance(value, str) else tuple(value)

        urls = table["url"]
        return cls(
            urls=[urls] if isinstance(urls, str) else list(urls), base_dn=table["base-dn"],
            bind_dn=get("bind.dn"), bind_secret=get("bind.secret"), auth=get("bind.auth"),
            starttls=get("tls.starttls"), allow_invalid_certs=get("tls.allow-invalid-certs"),
            timeout=float(get("timeout")), pool_size=get("pool.size"),
            filter_name=get("filter.name"), filter_email=get("filter.email"),
            filter_domain=get("filter.domain"), filter_groups=get("filter.groups"),
            domains=tuple(d.lower().rstrip(".") for d in get("domains")),
            attr_name=attrs("name"), attr_class=attrs("class"), attr_email=attrs("email"),
            attr_email_alias=attrs("email-alias"), attr_secret=attrs("secret"),
            attr_description=attrs("description"), attr_groups=attrs("groups"),
            attr_quota=attrs("quota"), attr_members=attrs("members"),
            attr_disabled=attrs("disabled"), class_group=tuple(get("class.group")),
            class_list=tuple(get("class.list")),
        )


def fill(template: str, value: str) -> str:
    """The filter ``template`` with each ``?`` replaced by ``value``, escaped (RFC 4515 §3:
    ``*``, ``(``, ``)``, ``\\`` and NUL), so a value can only ever be matched literally."""
    return template.replace("?", escape_filter_chars(value))


@dataclass(slots=True)
class _Entry:
    """One search result: its DN and attribute values decoded as UTF-8 text."""

    dn: str
    attrs: dict[str, list[str]]

    def values(self, names: tuple[str, ...]) -> list[str]:
        out: list[str] = []
        for name in names:
            out.extend(self.attrs.get(name.lower(), ()))
        return out


class LdapDirectory(Directory):
    """A read-only directory answered by an LDAP server."""

    read_only = True

    def __init__(self, name: str, config: LdapConfig):
        self.name = name
        self.config = config
        self.pool = LdapPool(
            name, config.urls, bind_dn=config.bind_dn, bind_secret=config.bind_secret,
            starttls=config.starttls, allow_invalid_certs=config.allow_invalid_certs,
            timeout=config.timeout, size=config.pool_size)
        c = config
        self._principal_attrs = sorted({
            *c.attr_name, *c.attr_class, *c.attr_email, *c.attr_email_alias,
            *c.attr_description, *c.attr_groups, *c.attr_quota, *c.attr_members,
            *c.attr_disabled, *(c.attr_secret if c.auth == "hash" else ()),
        })
        self._lists = {x.lower() for x in c.class_list}
        self._groups = {x.lower() for x in c.class_group}

    @classmethod
    def from_settings(cls, name: str, table: dict[str, Any]) -> LdapDirectory:
        return cls(name, LdapConfig.from_table(table))

    # --- the Directory contract ---------------------------------------------------------

    async def principal(self, name: str) -> Principal | None:
        return await self.pool.run(lambda conn: self._principal(conn, name))

    async def names_by_email(self, address: str) -> list[str]:
        def lookup(conn: Connection) -> list[str]:
            entries = self._search(conn, fill(self.config.filter_email, address.lower()),
                                   self.config.attr_name, _MAX_RESULTS)
            names = [n for e in entries if (n := self._name_of(e))]
            return sorted(dict.fromkeys(names))
        return await self.pool.run(lookup)

    async def is_local_domain(self, domain: str) -> bool:
        domain = domain.lower().rstrip(".")
        if not domain:
            return False
        if domain in self.config.domains:
            return True
        if not self.config.filter_domain:
            return False
        template = self.config.filter_domain
        return await self.pool.run(
            lambda conn: bool(self._search(conn, fill(template, domain), ("1.1",), 1)))

    async def members(self, name: str) -> list[str]:
        principal = await self.principal(name)
        return list(principal.members) if principal is not None else []

    async def verify_password(self, principal: Principal, password: str) -> bool:
        if not password:
            return False
        if self.config.auth == "hash":
            return await super().verify_password(principal, password)
        dn = await self.pool.run(lambda conn: self._dn_of_name(conn, principal.name))
        if dn is None:
            return False
        return await self.pool.check_password(dn, password)

    async def close(self) -> None:
        await self.pool.close()

    # --- on pool threads ----------------------------------------------------------------

    def _principal(self, conn: Connection, name: str) -> Principal | None:
        entry = self._entry_by_name(conn, name, self._principal_attrs)
        if entry is None:
            return None
        c = self.config
        kind = self._type_of(entry)
        emails = list(dict.fromkeys(
            e.strip().lower() for e in entry.values(c.attr_email + c.attr_email_alias)
            if e.strip()))
        principal = Principal(
            name=self._name_of(entry, prefer=name) or name, type=kind,
            description=next(iter(entry.values(c.attr_description)), ""),
            emails=emails,
            quota_bytes=_quota(entry.values(c.attr_quota), entry.dn),
            roles=["user"] if kind == PrincipalType.INDIVIDUAL else [],
            disabled=is_disabled_value(entry.values(c.attr_disabled)),
        )
        if c.auth == "hash":
            principal.secrets = entry.values(c.attr_secret)
        principal.member_of = self._groups_of(conn, entry)
        if kind in (PrincipalType.GROUP, PrincipalType.LIST):
            principal.members = self._members_of(conn, entry, kind)
        return principal

    def _entry_by_name(self, conn: Connection, name: str, attrs: Any) -> _Entry | None:
        """The one entry filter.name finds for ``name``.

        When the filter matches several entries (a filter such as "(|(uid=?)(mail=?))"),
        the one whose name attribute is ``name`` wins. When that still leaves no single
        entry the directory cannot answer: raising ``DirectoryUnavailable`` defers mail and
        logins until the administrator fixes the data, where picking one would deliver
        mail to, or check a password against, whichever entry the server returned first.
        """
        wanted = sorted({*attrs, *self.config.attr_name} - {"1.1"})
        entries = self._search(conn, fill(self.config.filter_name, name), wanted,
                               _MAX_AMBIGUOUS)
        if len(entries) <= 1:
            return entries[0] if entries else None
        exact = [e for e in entries
                 if any(n.lower() == name.lower() for n in e.values(self.config.attr_name))]
        if len(exact) == 1:
            return exact[0]
        dns = "; ".join(e.dn for e in entries)
        raise DirectoryUnavailable(
            f"LDAP directory {self.name}: the name {name!r} matches several entries ({dns}); "
            "make filter.name match one entry per name")

    def _dn_of_name(self, conn: Connection, name: str) -> str | None:
        entry = self._entry_by_name(conn, name, ())
        return entry.dn if entry is not None else None

    def _type_of(self, entry: _Entry) -> PrincipalType:
        classes = {v.lower() for v in entry.values(self.config.attr_class)}
        if classes & self._lists:
            return PrincipalType.LIST
        if classes & self._groups:
            return PrincipalType.GROUP
        return PrincipalType.INDIVIDUAL

    def _name_of(self, entry: _Entry, prefer: str | None = None) -> str | None:
        """The entry's name: the value matching ``prefer`` (the name it was found by, in
        its stored case) if any, else the first value."""
        names = entry.values(self.config.attr_name)
        if prefer is not None:
            for n in names:
                if n.lower() == prefer.lower():
                    return n
        return names[0] if names else None

    def _groups_of(self, conn: Connection, entry: _Entry) -> list[str]:
        groups = [self._dn_to_name(conn, v) if _is_dn(v) else v
                  for v in entry.values(self.config.attr_groups)]
        if self.config.filter_groups:
            found = self._search(conn, fill(self.config.filter_groups, entry.dn),
                                 self.config.attr_name, _MAX_RESULTS)
            groups.extend(self._name_of(g) for g in found)
        return sorted(dict.fromkeys(g for g in groups if g))

    def _members_of(self, conn: Connection, entry: _Entry, kind: PrincipalType) -> list[str]:
        """Group members as names; list members as addresses (a DN member of a list stands
        for that entry's primary address)."""
        out: list[str] = []
        for value in entry.values(self.config.attr_members):
            if not _is_dn(value):
                out.append(value.lower() if kind == PrincipalType.LIST else value)
            elif kind == PrincipalType.GROUP:
                if (name := self._dn_to_name(conn, value)) is not None:
                    out.append(name)
            elif (address := self._dn_to_address(conn, value)) is not None:
                out.append(address)
        return list(dict.fromkeys(out))

    def _dn_to_name(self, conn: Connection, dn: str) -> str | None:
        """The name of the entry at ``dn``; read from the DN itself when its first RDN is
        the name attribute (``uid=alice,ou=people,...``), saving a search per member."""
        rdn_type, rdn_value = _first_rdn(dn)
        if rdn_type is not None and rdn_type.lower() in {a.lower() for a in self.config.attr_name}:
            return rdn_value
        found = self._search(conn, None, self.config.attr_name, 1, base=dn)
        return self._name_of(found[0]) if found else None

    def _dn_to_address(self, conn: Connection, dn: str) -> str | None:
        found = self._search(conn, None, self.config.attr_email, 1, base=dn)
        emails = found[0].values(self.config.attr_email) if found else []
        return emails[0].lower() if emails else None

    def _search(self, conn: Connection, search_filter: str | None, attrs: Any, limit: int,
                base: str | None = None) -> list[_Entry]:
        """A subtree search under base-dn (or a base search of ``base``): the entries found.

        noSuchObject for a base search means "no such entry" (a dangling member DN); for
        base-dn it is a misconfiguration, reported as unavailable rather than letting
        every user look unknown. Other LDAP errors are unavailability too.
        """
        ok = conn.search(
            search_base=base or self.config.base_dn,
            search_filter=search_filter or "(objectClass=*)",
            search_scope=BASE if base else SUBTREE, attributes=list(attrs),
            size_limit=limit, time_limit=max(1, int(self.config.timeout)))
        code = conn.result.get("result") if conn.result else None
        if not ok and code not in (_SUCCESS, _SIZE_LIMIT_EXCEEDED):
            if code == _NO_SUCH_OBJECT and base:
                return []
            description = conn.result.get("description") if conn.result else "no result"
            raise DirectoryUnavailable(
                f"LDAP directory {self.name}: search under {base or self.config.base_dn} "
                f"on {self.pool.url_of(conn)} failed: {description} "
                f"{conn.result.get('message', '') if conn.result else ''}".rstrip())
        return [
            _Entry(r["dn"], {k.lower(): _texts(v) for k, v in r.get("raw_attributes", {}).items()})
            for r in conn.response or () if r.get("type") == "searchResEntry"
        ]


def _texts(values: Any) -> list[str]:
    if isinstance(values, bytes | str):
        values = [values]
    return [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in values]


def _is_dn(value: str) -> bool:
    """Whether a member value is a DN (``uid=alice,ou=people,...``) rather than a name or
    an address (neither can contain an unescaped "=" before the first ",")."""
    if "=" not in value or "@" in value.split("=", 1)[0]:
        return False
    try:
        return bool(parse_dn(value))
    except LDAPInvalidDnError:
        return False


def _first_rdn(dn: str) -> tuple[str | None, str | None]:
    try:
        parts = parse_dn(dn, escape=False, strip=True)
    except LDAPInvalidDnError:
        return None, None
    if not parts or parts[0][2] == "+":  # a multi-valued RDN: not a plain name
        return None, None
    return parts[0][0], _unescape_dn_value(parts[0][1])


def _unescape_dn_value(value: str) -> str:
    """RFC 4514 §3: ``\\,`` and ``\\XX`` escapes back to the characters."""
    out = bytearray()
    i = 0
    raw = value.encode("utf-8")
    while i < len(raw):
        if raw[i] == 0x5C and i + 1 < len(raw):
            pair = raw[i + 1:i + 3]
            if len(pair) == 2 and all(chr(b) in "0123456789abcdefABCDEF" for b in pair):
                out.append(int(pair, 16))
                i += 3
                continue
            out.append(raw[i + 1])
            i += 2
            continue
        out.append(raw[i])
        i += 1
    return out.decode("utf-8", "replace")


def _quota(values: list[str], dn: str) -> int:
    for value in values:
        try:
            return max(0, int(value.strip()))
        except ValueError:
            log.warning("ldap quota is not a number, treated as unlimited",
                        extra={"fields": {"dn": dn, "value": value}})
    return 0
