"""Settings of LDAP directories: ``[directory."NAME"]`` tables with ``type = "ldap"``.

The defaults fit an OpenLDAP tree with the core, cosine, inetorgperson, nis and misc
schemas: accounts are ``inetOrgPerson`` entries, groups ``groupOfNames``, mailing lists
``nisMailAlias`` (``rfc822MailMember`` holds the list's addresses), and extra addresses and
quotas live in ``mailAlias`` / ``diskQuota`` (a small auxiliary schema, as in Stalwart's own
examples). Every filter is a template: each ``?`` is replaced by the looked-up value, escaped
as RFC 4515 §3 requires, so a name like ``*)(uid=*`` cannot widen the search.

``DEFAULTS`` maps each key below ``[directory."NAME"]`` to its default, so
``LdapDirectory.from_settings`` can be given the raw table of a loaded configuration (the
loader does not fill defaults of nested keys such as ``bind.dn``).
"""
from __future__ import annotations

from typing import Any

from stalwart_mp.config.schema import (
    REQUIRED,
    SCHEMA,
    Bool,
    Choice,
    Duration,
    Int,
    Invalid,
    ListOf,
    Setting,
    Str,
    Type,
)

LDAP = ("type", ("ldap",))

_ENTRY_CLASSES = (
    "(|(objectClass=inetOrgPerson)(objectClass=groupOfNames)(objectClass=nisMailAlias))"
)


class LdapUrls(Type):
    """One ``ldap://`` / ``ldaps://`` URL, or a list of them tried in order (failover)."""

    label = 'an LDAP URL such as "ldap://ldap.example.org" or "ldaps://ldap.example.org:636", ' \
            "or a list of them"

    def parse(self, value: Any) -> list[str]:
        values = [value] if isinstance(value, str) else value
        if not isinstance(values, list) or not values:
            raise Invalid(f"expected {self.label}")
        for url in values:
            if not isinstance(url, str) or not url.lower().startswith(("ldap://", "ldaps://")) \
                    or len(url.split("://", 1)[1].strip("/")) == 0:
                raise Invalid(f"expected {self.label}")
        return values


class Attributes(Type):
    """An attribute name or a list of them (all are read, in order)."""

    label = 'an attribute name such as "mail", or a list of them'

    def parse(self, value: Any) -> list[str]:
        values = [value] if isinstance(value, str) else value
        if not isinstance(values, list) or not all(
            isinstance(v, str) and v.replace("-", "").replace(";", "").isalnum() for v in values
        ):
            raise Invalid(f"expected {self.label}")
        return values


class FilterTemplate(Str):
    """An LDAP filter with ``?`` standing for the looked-up value."""

    def __init__(self, optional: bool = False):
        super().__init__()
        self.optional = optional
        self.label = 'an LDAP filter containing "?", such as "(&(objectClass=inetOrgPerson)' \
                     '(uid=?))"' + (", or an empty string (off)" if optional else "")

    def parse(self, value: Any) -> str:
        value = super().parse(value)
        if self.optional and not value.strip():
            return ""
        balanced = value.count("(") == value.count(")")
        if "?" not in value or not value.startswith("(") or not balanced:
            raise Invalid(f"expected {self.label}")
        return value


_SETTINGS = [
    Setting(
        "directory.*.url", LdapUrls(), REQUIRED,
        'LDAP server: "ldap://host[:port]" or "ldaps://host[:port]" (TLS from the first '
        "byte). A list is tried in order: the first server that answers is used, the next "
        "one when it stops answering.",
    ),
    Setting(
        "directory.*.base-dn", Str(nonempty=True), REQUIRED,
        'Where accounts, groups and lists are searched (the whole subtree), e.g. '
        '"dc=example,dc=org".',
    ),
    Setting(
        "directory.*.bind.dn", Str(), "",
        "DN the server binds as for its searches (empty: anonymous). In hash mode it must "
        "be allowed to read the password attribute.",
    ),
    Setting("directory.*.bind.secret", Str(), "", "Password of bind.dn.", secret=True),
    Setting(
        "directory.*.bind.auth", Choice("bind", "hash"), "bind",
        'How a login password is checked. "bind": by binding as the user\'s DN (the LDAP '
        'server checks it, with its own lockout policy); "hash": by reading the password '
        "attribute and verifying the hash here ({SSHA}, {CRYPT}, bcrypt, argon2...).",
    ),
    Setting(
        "directory.*.tls.starttls", Bool(), False,
        "Upgrade ldap:// connections with StartTLS (RFC 4511 §4.14) before binding.",
    ),
    Setting(
        "directory.*.tls.allow-invalid-certs", Bool(), False,
        "Accept a certificate that does not validate (self-signed, wrong name, expired). "
        "Only for tests or a server reached over a trusted network.",
    ),
    Setting(
        "directory.*.timeout", Duration(), 5.0,
        "Longest wait to connect to the LDAP server and for each answer; after it, the "
        "lookup fails with a temporary error (mail is deferred, logins retried).",
    ),
    Setting(
        "directory.*.pool.size", Int(min=1, max=64), 4,
        "Connections to the LDAP server per worker process (and as many threads running "
        "the lookups, so the event loop never waits on LDAP).",
    ),
    Setting(
        "directory.*.filter.name", FilterTemplate(),
        f"(&{_ENTRY_CLASSES}(uid=?))",
        "Filter finding a principal (account, group or list) by its login name.",
    ),
    Setting(
        "directory.*.filter.email", FilterTemplate(),
        f"(&{_ENTRY_CLASSES}(|(mail=?)(mailAlias=?)))",
        'Filter finding the principals owning an address. "@domain" is looked up the same '
        "way to find a domain's catch-all.",
    ),
    Setting(
        "directory.*.filter.domain", FilterTemplate(optional=True),
        f"(&{_ENTRY_CLASSES}(|(mail=*@?)(mailAlias=*@?)))",
        "Filter telling whether a domain is ours: it is when some entry matches (by default, "
        'when some principal has an address there). Empty: only the "domains" list counts.',
    ),
    Setting(
        "directory.*.filter.groups", FilterTemplate(optional=True), "",
        "Filter finding the groups of a principal, ? being the principal's DN, e.g. "
        '"(&(objectClass=groupOfNames)(member=?))" for servers without a memberOf '
        "attribute. Empty: only attributes.groups is read.",
    ),
    Setting(
        "directory.*.domains", ListOf(Str(nonempty=True)), [],
        "Domains that are always ours, whatever filter.domain finds.",
    ),
    Setting(
        "directory.*.attributes.name", Attributes(), ["uid"],
        "Attribute holding the login name of a principal.",
    ),
    Setting(
        "directory.*.attributes.class", Attributes(), ["objectClass"],
        "Attribute whose values decide the principal's type: class.list, then "
        "class.group; any other entry found is an individual account.",
    ),
    Setting(
        "directory.*.attributes.email", Attributes(), ["mail"],
        "Attributes holding the addresses; the first value is the primary address.",
    ),
    Setting(
        "directory.*.attributes.email-alias", Attributes(), ["mailAlias"],
        'Attributes holding more addresses (aliases; "@domain" makes the catch-all).',
    ),
    Setting(
        "directory.*.attributes.secret", Attributes(), ["userPassword"],
        'Attribute holding the password hash (bind.auth = "hash" only).',
    ),
    Setting(
        "directory.*.attributes.description", Attributes(), ["description"],
        "Attribute holding a principal's description or display name.",
    ),
    Setting(
        "directory.*.attributes.groups", Attributes(), ["memberOf"],
        "Attribute listing the groups of a principal (DNs or names).",
    ),
    Setting(
        "directory.*.attributes.quota", Attributes(), ["diskQuota"],
        "Attribute holding the mailbox quota in bytes (absent or 0: unlimited).",
    ),
    Setting(
        "directory.*.attributes.members", Attributes(), ["member", "rfc822MailMember"],
        "Attributes holding the members of a group or list: DNs (resolved to names for a "
        "group, to primary addresses for a list) or plain names / addresses.",
    ),
    Setting(
        "directory.*.attributes.disabled", Attributes(), ["pwdAccountLockedTime"],
        "Attribute marking a disabled principal: any value but FALSE/0/no disables it, "
        'except a ppolicy lockout time, which only disables when it is the permanent lock '
        '"000001010000Z" (a temporary lockout after failed logins must not bounce mail).',
    ),
    Setting(
        "directory.*.class.group", ListOf(Str(nonempty=True)),
        ["groupOfNames", "groupOfUniqueNames", "posixGroup"],
        "Object classes of groups (their members are principal names).",
    ),
    Setting(
        "directory.*.class.list", ListOf(Str(nonempty=True)), ["nisMailAlias"],
        "Object classes of mailing lists (their members are addresses).",
    ),
]

SCHEMA.add(*(Setting(s.key, s.type, s.default, s.help, when=LDAP, secret=s.secret)
             for s in _SETTINGS))

DEFAULTS: dict[str, Any] = {
    s.key.removeprefix("directory.*."): s.default for s in _SETTINGS if s.default is not REQUIRED
}
