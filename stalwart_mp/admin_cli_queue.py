"""``stalwart-mp-admin queue …``: the outbound queue (list, show, retry, cancel).

Registered by ``admin_cli.build_parser``; shares its connection, error handling and exit
codes (an unknown queue id exits with 1, like every refusal).
"""
from __future__ import annotations

import argparse
import json
from typing import Any

from stalwart_mp import admin_cli as cli
from stalwart_mp.control.client import ControlStub
from stalwart_mp.control.gen.stalwart_mp.v1 import queue_pb2, queue_pb2_grpc

STATES = "scheduled, deferred (message) or queued, delivered, failed, cancelled (recipient)"


def add_queue_commands(commands: Any) -> None:
    queue = commands.add_parser(
        "queue", help="the outbound queue: list, show, retry, cancel",
        description="Messages accepted for remote recipients and not yet delivered, "
        "bounced or cancelled. The delivery runner retries on its schedule; `retry` makes a "
        "message due now, `cancel` drops pending recipients without a bounce.",
    )
    actions = queue.add_subparsers(dest="action", metavar="ACTION", required=True)
    listing = actions.add_parser("list", help="list queued messages, oldest first",
                                 description="List queued messages, oldest first.")
    listing.add_argument("--sender", default=None,
                         help='only this envelope sender ("" for bounces)')
    listing.add_argument("--domain", default="", help="only messages with a recipient in DOMAIN")
    listing.add_argument("--status", default="", help=f"only messages in a state: {STATES}")
    listing.add_argument("--limit", type=int, default=0,
                         help="at most this many messages (default: all)")
    listing.add_argument("--json", action="store_true", help="print the messages as JSON")
    listing.set_defaults(run=cmd_queue_list)

    show = actions.add_parser("show", help="show a message, its recipients and attempts",
                              description="Show one queued message with the state of each "
                              "recipient and the delivery attempts made.")
    show.add_argument("id", type=int, help="queue id (from `queue list`)")
    show.add_argument("--json", action="store_true", help="print the message as JSON")
    show.set_defaults(run=cmd_queue_show)

    retry = actions.add_parser("retry", help="deliver a message now",
                               description="Make a queued message due now instead of at its "
                               "next scheduled attempt.")
    retry.add_argument("id", type=int, help="queue id")
    retry.set_defaults(run=cmd_queue_retry)

    cancel = actions.add_parser(
        "cancel", help="cancel a message or one of its recipients",
        description="Cancel every pending recipient of a message (it leaves the queue), or "
        "only --recipient. No bounce is sent to the sender.")
    cancel.add_argument("id", type=int, help="queue id")
    cancel.add_argument("--recipient", default="", help="cancel only this recipient")
    cancel.set_defaults(run=cmd_queue_cancel)


def _queue(stub: ControlStub) -> queue_pb2_grpc.QueueStub:
    return queue_pb2_grpc.QueueStub(stub.channel)


def _when(ts: Any) -> str:
    return cli._when(ts.seconds + ts.nanos / 1e9) if ts.seconds else "-"


def cmd_queue_list(stub: ControlStub, args: argparse.Namespace) -> int:
    messages: list[queue_pb2.QueuedMessage] = []
    token = ""
    while True:
        request = queue_pb2.ListMessagesRequest(recipient_domain=args.domain,
                                                status=args.status, page_token=token,
                                                page_size=500)
        if args.sender is not None:
            request.sender = args.sender
        page = cli._call(_queue(stub).ListMessages, request, args.control, args.timeout)
        messages += page.messages
        token = page.next_page_token
        if not token or (args.limit and len(messages) >= args.limit):
            break
    if args.limit:
        messages = messages[:args.limit]
    if args.json:
        print(json.dumps([json.loads(cli._to_json(m)) for m in messages], indent=2))
        return cli.EXIT_OK
    if not messages:
        print("the queue is empty" if not (args.sender or args.domain or args.status)
              else "no queued message matches")
        return cli.EXIT_OK
    rows = cli._table(
        ("ID", "STATUS", "FROM", "PENDING", "SIZE", "QUEUED", "NEXT ATTEMPT"),
        [(str(m.id), m.status, m.sender or "<>",
          ", ".join(r.address for r in m.recipients if r.status == "queued") or "-",
          cli._size(m.size), _when(m.created_at), _when(m.next_attempt)) for m in messages])
    print("\n".join(row[2:] for row in rows))
    return cli.EXIT_OK


def cmd_queue_show(stub: ControlStub, args: argparse.Namespace) -> int:
    m = cli._call(_queue(stub).GetMessage, queue_pb2.GetMessageRequest(id=args.id),
                  args.control, args.timeout)
    if args.json:
        print(cli._to_json(m))
        return cli.EXIT_OK
    print(f"id            {m.id}")
    print(f"status        {m.status}")
    print(f"from          {m.sender or '<>'}")
    print(f"submitted by  {m.authenticated_as or '-'}")
    print(f"size          {cli._size(m.size)}")
    print(f"queued        {_when(m.created_at)}")
    print(f"next attempt  {_when(m.next_attempt)}  (attempts so far: {m.attempts})")
    print("recipients")
    for r in m.recipients:
        print(f"  {r.address}  {r.status}" + (f"  {r.remote_mta}: {r.reply}" if r.reply else ""))
    if m.history:
        print("attempts")
        for a in m.history:
            print(f"  {_when(a.at)}  {a.host or '-'}  {', '.join(a.recipients)}: {a.reply}")
    return cli.EXIT_OK


def cmd_queue_retry(stub: ControlStub, args: argparse.Namespace) -> int:
    m = cli._call(_queue(stub).RetryMessage, queue_pb2.RetryMessageRequest(id=args.id),
                  args.control, args.timeout)
    print(f"message {m.id} is due now ({len([r for r in m.recipients if r.status == 'queued'])}"
          " pending recipients)")
    return cli.EXIT_OK


def cmd_queue_cancel(stub: ControlStub, args: argparse.Namespace) -> int:
    reply = cli._call(_queue(stub).CancelMessage,
                      queue_pb2.CancelMessageRequest(id=args.id, recipient=args.recipient),
                      args.control, args.timeout)
    if reply.HasField("message"):
        print(f"cancelled {args.recipient} in message {args.id}; still pending: " +
              ", ".join(r.address for r in reply.message.recipients if r.status == "queued"))
    else:
        print(f"message {args.id} cancelled: it left the queue")
    return cli.EXIT_OK
