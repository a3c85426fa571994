"""The Domains (domains with DKIM keys) and Dns (records, live check) services.

Both run their store work on the DirectoryBackend's event loop, like the Principals service:
a domain is a principal of the internal directory (``DirectoryManager``), its DKIM keys are
in the data store (``directory/dkim_keys.py``). The records come from the running config
(``control/dns_records.py``) and the check asks the configured resolver
(``control/dns_check.py``). Every change goes to the audit log (``control/auth.py``).
Dns works with any directory (SQL and LDAP domains too); Domains needs the internal one.
"""
from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc

from stalwart_mp.control.auth import audit
from stalwart_mp.control.dns_check import LiveDns, RecordStatus, check_records
from stalwart_mp.control.dns_records import (
    DnsRecord,
    DnsRecordsError,
    build_records,
    host_setup,
    mta_sts_policy,
    zone_text,
)
from stalwart_mp.control.gen.stalwart_mp.v1 import (
    dns_pb2,
    dns_pb2_grpc,
    domains_pb2,
    domains_pb2_grpc,
    principals_pb2,
)
from stalwart_mp.control.principals_service import (
    CALL_TIMEOUT,
    DEFAULT_PAGE,
    EXTERNAL,
    MAX_PAGE,
    BackendUnavailable,
    DirectoryBackend,
    status_of,
)
from stalwart_mp.control.status import timestamp
from stalwart_mp.directory import dkim_keys
from stalwart_mp.directory.base import DirectoryError, DirectoryUnavailable, PrincipalType
from stalwart_mp.directory.dkim_keys import DkimKey

T = TypeVar("T")

_DOMAIN = re.compile(r"(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}")
_STATUS = {
    RecordStatus.PUBLISHED: dns_pb2.DNS_RECORD_STATUS_PUBLISHED,
    RecordStatus.MISSING: dns_pb2.DNS_RECORD_STATUS_MISSING,
    RecordStatus.DIFFERENT: dns_pb2.DNS_RECORD_STATUS_DIFFERENT,
    RecordStatus.ERROR: dns_pb2.DNS_RECORD_STATUS_ERROR,
}


class _External(Exception):
    """The directory is external: no manager."""


class _NotFound(Exception):
    """No such domain (the message says which)."""


class _Calls:
    """Runs a coroutine on the backend's loop and turns failures into gRPC statuses."""

    def __init__(self, backend: DirectoryBackend | None):
        self.backend = backend

    def _do(self, context: grpc.ServicerContext, call: Callable[[Any], Awaitable[T]],
            manager: bool = True) -> T:
        """Run ``call(manager)`` (or ``call(services)`` with ``manager=False``)."""
        if self.backend is None:
            context.abort(grpc.StatusCode.UNAVAILABLE,
                          "this control plane runs without a configuration: no directory")

        async def checked(target: Any) -> T:
            if target is None:
                raise _External()
            return await call(target)

        try:
            if manager:
                return self.backend.run(checked)
            return self.backend.run_services(checked)
        except _External:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, EXTERNAL)
        except _NotFound as exc:
            context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
        except DnsRecordsError as exc:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
        except DirectoryError as exc:
            text = str(exc)
            code = (grpc.StatusCode.FAILED_PRECONDITION if "still has addresses" in text
                    else status_of(exc))
            context.abort(code, text)
        except (BackendUnavailable, DirectoryUnavailable) as exc:
            context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
        except TimeoutError:
            context.abort(grpc.StatusCode.DEADLINE_EXCEEDED,
                          f"the stores did not answer within {CALL_TIMEOUT:.0f}s")
        raise AssertionError("unreachable: abort raises")

    @property
    def cfg(self) -> Any:
        assert self.backend is not None
        return self.backend.cfg


def domain_argument(context: grpc.ServicerContext, field: str, value: str) -> str:
    """``value`` lower-cased without a final dot; INVALID_ARGUMENT naming ``field`` else."""
    name = value.strip().lower().rstrip(".")
    if not name:
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{field}: a domain name is required")
    if not _DOMAIN.fullmatch(name):
        context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                      f'{field}: "{value}" is not a domain name (such as example.org)')
    return name


async def _domain(manager: Any, name: str) -> Any:
    p = await manager.directory.principal(name)
    if p is None or p.type != PrincipalType.DOMAIN:
        raise _NotFound(f'no domain named "{name}"')
    return p


def key_to_proto(key: DkimKey) -> domains_pb2.DkimKey:
    return domains_pb2.DkimKey(
        selector=key.selector, algorithm=key.algorithm, public_key=key.public_key_b64(),
        txt_record=key.txt_record(), dns_name=key.dns_name,
        created_at=timestamp(key.created_at))


def domain_to_proto(p: Any, keys: list[DkimKey]) -> domains_pb2.Domain:
    return domains_pb2.Domain(name=p.name, description=p.description, id=p.id,
                              dkim_keys=[key_to_proto(k) for k in keys])


class DomainsServicer(domains_pb2_grpc.DomainsServicer, _Calls):
    """Domains.*: the directory's domains and their DKIM keys."""

    def CreateDomain(  # gRPC method name
        self, request: principals_pb2.CreateDomainRequest, context: grpc.ServicerContext
    ) -> domains_pb2.Domain:
        name = domain_argument(context, "name", request.name)

        async def create(manager: Any) -> domains_pb2.Domain:
            p = await manager.create_domain(name, request.description)
            try:
                # keys left by a domain of that name deleted outside this service are
                # replaced (fresh selectors), never reused
                if await dkim_keys.domain_keys(manager.store, name):
                    keys = await dkim_keys.rotate_keys(manager.store, name)
                else:
                    keys = await dkim_keys.create_keys(manager.store, name)
            except Exception:
                await manager.delete(name)  # no domain without its keys
                raise
            return domain_to_proto(p, keys)

        domain = self._do(context, create)
        audit("domain.create", name=name, dkim=[k.selector for k in domain.dkim_keys])
        return domain

    def ListDomains(  # gRPC method name
        self, request: domains_pb2.ListDomainsRequest, context: grpc.ServicerContext
    ) -> domains_pb2.ListDomainsResponse:
        if request.page_size < 0:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          "page_size: must not be negative")
        size = min(request.page_size or DEFAULT_PAGE, MAX_PAGE)

        async def listing(manager: Any) -> tuple[list[domains_pb2.Domain], bool]:
            # one more than asked tells whether there is a next page
            found = await manager.directory.list_principals(
                type=PrincipalType.DOMAIN, search=request.search,
                after=request.page_token, limit=size + 1)
            page = found[:size]
            out = [domain_to_proto(p, await dkim_keys.domain_keys(manager.store, p.name))
                   for p in page]
            return out, len(found) > size

        domains, more = self._do(context, listing)
        return domains_pb2.ListDomainsResponse(
            domains=domains, next_page_token=domains[-1].name if more and domains else "")

    def GetDomain(  # gRPC method name
        self, request: domains_pb2.GetDomainRequest, context: grpc.ServicerContext
    ) -> domains_pb2.Domain:
        name = domain_argument(context, "name", request.name)

        async def get(manager: Any) -> domains_pb2.Domain:
            p = await _domain(manager, name)
            return domain_to_proto(p, await dkim_keys.domain_keys(manager.store, name))

        return self._do(context, get)

    def DeleteDomain(  # gRPC method name
        self, request: domains_pb2.DeleteDomainRequest, context: grpc.ServicerContext
    ) -> domains_pb2.DeleteDomainResponse:
        name = domain_argument(context, "name", request.name)

        async def delete(manager: Any) -> None:
            await _domain(manager, name)
            await manager.delete(name)  # refused while addresses use it: keys kept then
            await dkim_keys.delete_keys(manager.store, name)

        self._do(context, delete)
        audit("domain.delete", name=name)
        return domains_pb2.DeleteDomainResponse()

    def RotateDkim(  # gRPC method name
        self, request: domains_pb2.RotateDkimRequest, context: grpc.ServicerContext
    ) -> domains_pb2.Domain:
        name = domain_argument(context, "name", request.name)

        async def rotate(manager: Any) -> tuple[domains_pb2.Domain, list[str]]:
            p = await _domain(manager, name)
            old = await dkim_keys.domain_keys(manager.store, name)
            keys = await dkim_keys.rotate_keys(manager.store, name)
            return domain_to_proto(p, keys), [k.selector for k in old]

        domain, old = self._do(context, rotate)
        audit("dkim.rotate", name=name, old=old, new=[k.selector for k in domain.dkim_keys])
        return domain


def record_to_proto(r: DnsRecord) -> dns_pb2.DnsRecord:
    return dns_pb2.DnsRecord(name=r.name, type=r.type, value=r.value, ttl=r.ttl,
                             purpose=r.purpose, in_domain_zone=r.in_domain_zone)


class DnsServicer(dns_pb2_grpc.DnsServicer, _Calls):
    """Dns.Records and Dns.Check for a local domain."""

    async def _records(self, services: Any, domain: str) -> tuple[list[DnsRecord], Any]:
        if not await services.directory.is_local_domain(domain):
            raise _NotFound(f'no domain named "{domain}"')
        keys = await dkim_keys.domain_keys(services.data, domain)
        setup = host_setup(self.cfg)  # small file reads: the certificate chain
        return build_records(domain, setup, keys), setup

    def Records(  # gRPC method name
        self, request: dns_pb2.DnsRecordsRequest, context: grpc.ServicerContext
    ) -> dns_pb2.DnsRecordsResponse:
        domain = domain_argument(context, "domain", request.domain)
        records, setup = self._do(context, lambda s: self._records(s, domain), manager=False)
        return dns_pb2.DnsRecordsResponse(
            domain=domain, records=[record_to_proto(r) for r in records],
            zone=zone_text(domain, records, setup.hostname),
            mta_sts_policy=mta_sts_policy(setup))

    def Check(  # gRPC method name
        self, request: dns_pb2.DnsCheckRequest, context: grpc.ServicerContext
    ) -> dns_pb2.DnsCheckResponse:
        domain = domain_argument(context, "domain", request.domain)

        async def check(services: Any) -> list:
            records, _ = await self._records(services, domain)
            return await check_records(records, LiveDns.uncached(self.cfg))

        checks = self._do(context, check, manager=False)
        return dns_pb2.DnsCheckResponse(
            domain=domain,
            checks=[dns_pb2.DnsRecordCheck(record=record_to_proto(c.record),
                                           status=_STATUS[c.status], found=c.found,
                                           error=c.error) for c in checks],
            all_published=all(c.status == RecordStatus.PUBLISHED for c in checks))
