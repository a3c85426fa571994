"""The Queue service of the control plane: list, inspect, retry and cancel queued messages.

A thin gRPC face on ``smtp/queue/manage.py`` (the one management API of the outbound
queue), run on the DirectoryBackend's event loop with the process's Services, like the
other services. Page tokens are the last queue id of the page. Changes are audit-logged.
"""
from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc

from stalwart_mp.control.auth import audit
from stalwart_mp.control.gen.stalwart_mp.v1 import queue_pb2, queue_pb2_grpc
from stalwart_mp.control.principals_service import (
    DEFAULT_PAGE,
    MAX_PAGE,
    DirectoryBackend,
    on_data_store,
)
from stalwart_mp.control.status import timestamp
from stalwart_mp.smtp.queue import manage
from stalwart_mp.smtp.queue.store import FINAL, TAG_MESSAGE, QueuedMessage

T = TypeVar("T")

MESSAGE_STATES = ("scheduled", "deferred")
RECIPIENT_STATES = ("queued", *FINAL)


async def queue_size(data: Any) -> int:
    """Messages in the outbound queue (a key-only scan of the message subspace)."""
    rows = await data.range(bytes([TAG_MESSAGE]), bytes([TAG_MESSAGE + 1]), keys_only=True)
    return len(rows)


def message_to_proto(m: QueuedMessage) -> queue_pb2.QueuedMessage:
    out = queue_pb2.QueuedMessage(
        id=m.id, sender=m.mail_from, status=m.status, size=m.size,
        created_at=timestamp(m.created_at), next_attempt=timestamp(m.next_attempt),
        attempts=m.attempts, authenticated_as=m.authenticated_as or "",
        dsn_ret=m.ret or "", dsn_envid=m.envid or "", requiretls=m.requiretls)
    for r in m.recipients:
        rcpt = out.recipients.add(address=r.address, status=r.status, reply=r.reply,
                                  remote_mta=r.remote_mta, notify=r.notify)
        if r.updated_at:
            rcpt.updated_at.CopyFrom(timestamp(r.updated_at))
    for a in m.history:
        out.history.add(at=timestamp(a.at), host=a.host, recipients=a.recipients,
                        reply=a.reply)
    return out


class QueueServicer(queue_pb2_grpc.QueueServicer):
    def __init__(self, backend: DirectoryBackend | None):
        self.backend = backend

    def _run(self, context: grpc.ServicerContext,
             call: Callable[[Any], Awaitable[T]]) -> T:
        return on_data_store(self.backend, context, call)

    def _found(self, context: grpc.ServicerContext, qid: int) -> QueuedMessage:
        if qid <= 0:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "id: a queue id (> 0) is required")
        message = self._run(context, lambda data: manage.get_message(data, qid))
        if message is None:
            context.abort(grpc.StatusCode.NOT_FOUND,
                          f"no message {qid} in the queue (delivered, bounced or cancelled)")
        return message

    def ListMessages(self, request: queue_pb2.ListMessagesRequest,  # gRPC method name
                     context: grpc.ServicerContext) -> queue_pb2.ListMessagesResponse:
        if request.status and request.status not in (*MESSAGE_STATES, *RECIPIENT_STATES):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          f'status: "{request.status}" is not one of '
                          f"{', '.join((*MESSAGE_STATES, *RECIPIENT_STATES))}")
        if request.page_size > MAX_PAGE:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          f"page_size: at most {MAX_PAGE}, got {request.page_size}")
        try:
            after = int(request.page_token or 0)
        except ValueError:
            after = -1
        if after < 0:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          f'page_token: "{request.page_token}" is not a token this service '
                          "returned")
        size = request.page_size or DEFAULT_PAGE
        sender = request.sender if request.HasField("sender") else None
        messages = self._run(context, lambda data: manage.list_messages(
            data, sender=sender, recipient_domain=request.recipient_domain or None,
            status=request.status or None, after_id=after, limit=size + 1))
        more = len(messages) > size
        messages = messages[:size]
        return queue_pb2.ListMessagesResponse(
            messages=[message_to_proto(m) for m in messages],
            next_page_token=str(messages[-1].id) if more else "")

    def GetMessage(self, request: queue_pb2.GetMessageRequest,  # gRPC method name
                   context: grpc.ServicerContext) -> queue_pb2.QueuedMessage:
        return message_to_proto(self._found(context, request.id))

    def RetryMessage(self, request: queue_pb2.RetryMessageRequest,  # gRPC method name
                     context: grpc.ServicerContext) -> queue_pb2.QueuedMessage:
        self._found(context, request.id)
        if not self._run(context, lambda data: manage.retry_now(data, request.id)):
            context.abort(grpc.StatusCode.NOT_FOUND,
                          f"message {request.id} left the queue meanwhile")
        audit("queue.retry", id=request.id)
        return message_to_proto(self._found(context, request.id))

    def CancelMessage(self, request: queue_pb2.CancelMessageRequest,  # gRPC method name
                      context: grpc.ServicerContext) -> queue_pb2.CancelMessageResponse:
        message = self._found(context, request.id)
        recipient = request.recipient.strip() or None
        if recipient is not None:
            r = message.recipient(recipient)
            if r is None:
                context.abort(grpc.StatusCode.NOT_FOUND,
                              f"recipient: message {request.id} has no recipient {recipient}")
            if not r.pending:
                context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                              f"recipient: {recipient} is already {r.status}")
        if not self._run(context, lambda data: manage.cancel(data, request.id, recipient)):
            context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                          f"message {request.id} has nothing pending to cancel")
        audit("queue.cancel", id=request.id, recipient=recipient or "*")
        after = self._run(context, lambda data: manage.get_message(data, request.id))
        if after is None or not after.pending:
            return queue_pb2.CancelMessageResponse()
        return queue_pb2.CancelMessageResponse(message=message_to_proto(after))
