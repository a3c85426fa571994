"""The outbound queue: messages with filters (sender, recipient domain, state) and
paging, a message's recipients and attempt history, retry now and cancel (the whole
message or one recipient, with confirmation). Everything goes through the Queue service.
"""
from __future__ import annotations

import grpc
from flask import Blueprint, flash, redirect, render_template, request, url_for
from werkzeug.wrappers import Response

from admin_web.context import control, login_required
from admin_web.forms import ConfirmForm
from admin_web.grpc_client import ControlError
from stalwart_mp.control.gen.stalwart_mp.v1 import queue_pb2

bp = Blueprint("queue", __name__, url_prefix="/queue")
PAGE_SIZE = 50
STATES = ("scheduled", "deferred", "queued", "delivered", "failed", "cancelled")


@bp.route("/")
@login_required
def index() -> str | tuple[str, int]:
    sender = request.args.get("sender", "").strip()
    domain = request.args.get("domain", "").strip()
    state = request.args.get("status", "").strip()
    query = queue_pb2.ListMessagesRequest(recipient_domain=domain, status=state,
                                          page_size=PAGE_SIZE,
                                          page_token=request.args.get("after", ""))
    if sender:
        query.sender = sender
    try:
        page = control().queue.ListMessages(query)
    except ControlError as exc:
        if exc.code != grpc.StatusCode.INVALID_ARGUMENT:
            raise
        flash(str(exc), "error")
        return render_template("queue.html", page=queue_pb2.ListMessagesResponse(),
                               sender=sender, domain=domain, state=state,
                               states=STATES), 400
    return render_template("queue.html", page=page, sender=sender, domain=domain,
                           state=state, states=STATES)


@bp.route("/<int:message_id>")
@login_required
def message(message_id: int) -> str:
    msg = control().queue.GetMessage(queue_pb2.GetMessageRequest(id=message_id))
    return render_template("queue_message.html", m=msg, form=ConfirmForm())


@bp.route("/<int:message_id>/retry", methods=["POST"])
@login_required
def retry(message_id: int) -> Response:
    control().queue.RetryMessage(queue_pb2.RetryMessageRequest(id=message_id))
    flash(f"Message {message_id} is due now: the queue will try it at once.", "success")
    return redirect(url_for("queue.message", message_id=message_id))


@bp.route("/<int:message_id>/cancel", methods=["GET", "POST"])
@login_required
def cancel(message_id: int) -> str | Response:
    recipient = request.values.get("recipient", "")
    form = ConfirmForm()
    if form.validate_on_submit():
        left = control().queue.CancelMessage(queue_pb2.CancelMessageRequest(
            id=message_id, recipient=recipient))
        what = recipient or "every pending recipient"
        flash(f"Cancelled {what} of message {message_id}; no DSN is sent.", "success")
        if left.HasField("message"):
            return redirect(url_for("queue.message", message_id=message_id))
        return redirect(url_for("queue.index"))
    msg = control().queue.GetMessage(queue_pb2.GetMessageRequest(id=message_id))
    return render_template("queue_cancel.html", m=msg, recipient=recipient, form=form)
