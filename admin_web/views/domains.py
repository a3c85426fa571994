"""Domains (list, add, delete with confirmation) and each domain's DNS records: a table
with a copy button per record, the zone file to download, and a live check."""
from __future__ import annotations

from flask import (
    Blueprint,
    Response,
    flash,
    redirect,
    render_template,
    request,
    url_for,
)

from admin_web.context import control, login_required
from admin_web.forms import ConfirmForm, DomainForm
from admin_web.grpc_client import ControlError
from stalwart_mp.control.gen.stalwart_mp.v1 import dns_pb2, domains_pb2, principals_pb2

bp = Blueprint("domains", __name__, url_prefix="/domains")
PAGE_SIZE = 50

STATUS_NAMES = {
    dns_pb2.DNS_RECORD_STATUS_PUBLISHED: "published",
    dns_pb2.DNS_RECORD_STATUS_MISSING: "missing",
    dns_pb2.DNS_RECORD_STATUS_DIFFERENT: "different",
    dns_pb2.DNS_RECORD_STATUS_ERROR: "error",
}


@bp.route("/", methods=["GET", "POST"])
@login_required
def index() -> str | Response | tuple[str, int]:
    form = DomainForm()
    code = 200
    if form.validate_on_submit():
        name = form.name.data.strip().lower().rstrip(".")
        try:
            control().domains.CreateDomain(principals_pb2.CreateDomainRequest(
                name=name, description=form.description.data or ""))
        except ControlError as exc:
            form.name.errors.append(str(exc))
            code = 400
        else:
            flash(f"Domain {name} created with its DKIM keys: publish its DNS records now.",
                  "success")
            return redirect(url_for("domains.dns", name=name))
    elif form.is_submitted():
        code = 400
    search = request.args.get("q", "").strip()
    page = control().domains.ListDomains(domains_pb2.ListDomainsRequest(
        search=search, page_token=request.args.get("after", ""), page_size=PAGE_SIZE))
    return render_template("domains.html", form=form, page=page, search=search,
                           confirm=ConfirmForm()), code


@bp.route("/<name>/delete", methods=["GET", "POST"])
@login_required
def delete(name: str) -> str | Response | tuple[str, int]:
    form = ConfirmForm()
    domain = control().domains.GetDomain(domains_pb2.GetDomainRequest(name=name))
    if form.validate_on_submit():
        try:
            control().domains.DeleteDomain(domains_pb2.DeleteDomainRequest(name=name))
        except ControlError as exc:
            flash(f"{name} was not deleted: {exc}", "error")
            return render_template("confirm_delete.html", form=form, what="domain",
                                   name=name, back=url_for("domains.index")), 409
        flash(f"Domain {name} and its DKIM keys deleted.", "success")
        return redirect(url_for("domains.index"))
    return render_template("confirm_delete.html", form=form, what="domain", name=domain.name,
                           back=url_for("domains.index"),
                           detail="Its DKIM keys are deleted with it. A domain still used "
                           "by an address cannot be deleted.")


@bp.route("/<name>/dns")
@login_required
def dns(name: str) -> str:
    records = control().dns.Records(dns_pb2.DnsRecordsRequest(domain=name))
    return render_template("dns.html", records=records, check=None, statuses=STATUS_NAMES,
                           form=ConfirmForm())


@bp.route("/<name>/dns/check", methods=["POST"])
@login_required
def dns_check(name: str) -> str:
    records = control().dns.Records(dns_pb2.DnsRecordsRequest(domain=name))
    check = control().dns.Check(dns_pb2.DnsCheckRequest(domain=name), timeout=30)
    return render_template("dns.html", records=records, check=check, statuses=STATUS_NAMES,
                           form=ConfirmForm())


@bp.route("/<name>/zone")
@login_required
def zone(name: str) -> Response:
    records = control().dns.Records(dns_pb2.DnsRecordsRequest(domain=name))
    return Response(records.zone, mimetype="text/dns", headers={
        "Content-Disposition": f'attachment; filename="{records.domain}.zone"'})


@bp.route("/<name>/rotate-dkim", methods=["POST"])
@login_required
def rotate(name: str) -> Response:
    domain = control().domains.RotateDkim(domains_pb2.RotateDkimRequest(name=name))
    selectors = ", ".join(k.selector for k in domain.dkim_keys)
    flash(f"New DKIM keys ({selectors}): publish their records; keep the old ones for a "
          "few days.", "success")
    return redirect(url_for("domains.dns", name=name))
