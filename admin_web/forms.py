"""WTForms of the web admin; every form carries a CSRF token (Flask-WTF)."""
from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import (
    BooleanField,
    IntegerField,
    PasswordField,
    StringField,
    TextAreaField,
)
from wtforms.validators import (
    DataRequired,
    EqualTo,
    Length,
    NumberRange,
    Optional,
    Regexp,
)

_DOMAIN = Regexp(r"^[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*"
                 r"[A-Za-z0-9])?)+\.?$",
                 message="a domain name such as example.org (letters, digits, hyphens, dots)")


class ConfirmForm(FlaskForm):
    """A button-only form (delete, revoke, reload, check): the CSRF token is its content."""


class LoginForm(FlaskForm):
    username = StringField("User name", validators=[DataRequired(), Length(max=255)],
                           render_kw={"autocomplete": "username", "autocapitalize": "none",
                                      "spellcheck": "false"})
    password = PasswordField("Password", validators=[DataRequired(), Length(max=1024)],
                             render_kw={"autocomplete": "current-password"})
    # RFC 6238 TOTP code; sent to the server as "password$code" (Stalwart's convention)
    code = StringField("Authentication code", validators=[
        Optional(), Regexp(r"^\s*[0-9]{6}\s*$",
                           message="the 6 digits of your authenticator app")],
        description="Only if two-factor authentication is on for your account.",
        render_kw={"autocomplete": "one-time-code", "inputmode": "numeric",
                   "pattern": "[0-9]{6}", "maxlength": "6"})


class DomainForm(FlaskForm):
    name = StringField("Domain name", validators=[DataRequired(), Length(max=253), _DOMAIN])
    description = StringField("Description", validators=[Optional(), Length(max=1024)])


def _lines(text: str | None) -> list[str]:
    return [v.strip() for v in (text or "").replace(",", "\n").splitlines() if v.strip()]


class PrincipalForm(FlaskForm):
    """Create an account, group or list."""

    name = StringField("Name (login)", validators=[DataRequired(), Length(max=255)],
                       description="Letters, digits and . _ @ + -; an account's login, "
                       "usually its address.")
    description = StringField("Full name or description", validators=[Optional(),
                                                                      Length(max=1024)])
    emails = TextAreaField("Addresses", validators=[Optional()],
                           description="One per line, the primary first; their domains "
                           "must exist.")
    password = PasswordField("Password", validators=[Optional(), Length(min=8, max=1024)],
                             description="Accounts only; at least 8 characters.")
    quota_mb = IntegerField("Storage quota (MiB)", validators=[Optional(), NumberRange(min=0)],
                            description="0 or empty: unlimited.")
    members = TextAreaField("Members", validators=[Optional()],
                            description="Groups: account names; lists: addresses. One per "
                            "line.")
    admin = BooleanField("Administrator (role admin)")

    def email_list(self) -> list[str]:
        return _lines(self.emails.data)

    def member_list(self) -> list[str]:
        return _lines(self.members.data)


class PrincipalEditForm(FlaskForm):
    """Change the names, quota, roles and state of a principal."""

    new_name = StringField("Name (login)", validators=[DataRequired(), Length(max=255)])
    description = StringField("Full name or description", validators=[Optional(),
                                                                      Length(max=1024)])
    quota_mb = IntegerField("Storage quota (MiB)", validators=[Optional(), NumberRange(min=0)],
                            description="0 or empty: unlimited.")
    quota_messages = IntegerField("Message quota", validators=[Optional(), NumberRange(min=0)],
                                  description="0 or empty: unlimited.")
    roles = StringField("Roles", validators=[Optional()],
                        description='Comma separated, e.g. "user, admin".')
    disabled = BooleanField("Disabled (may not log in nor receive mail)")

    def role_list(self) -> list[str]:
        return _lines(self.roles.data)


class AddressForm(FlaskForm):
    address = StringField("Address", validators=[DataRequired(), Length(max=320)],
                          description='An alias such as al@example.org, "@example.org" '
                          'for a catch-all, "sales-*@example.org" for a wildcard.')


class MemberForm(FlaskForm):
    member = StringField("Member", validators=[DataRequired(), Length(max=320)])


class PasswordForm(FlaskForm):
    password = PasswordField("New password", validators=[DataRequired(),
                                                         Length(min=8, max=1024)],
                             render_kw={"autocomplete": "new-password"})
    confirm = PasswordField("Repeat it", validators=[EqualTo("password",
                                                             "the passwords differ")])


class AppPasswordForm(FlaskForm):
    label = StringField("Name of the app password", validators=[DataRequired(),
                                                                Length(max=64)],
                        description='e.g. "phone": one per device, revoke it when lost.')


class SetupForm(FlaskForm):
    hostname = StringField("Host name of this mail server",
                           validators=[DataRequired(), Length(max=253), _DOMAIN],
                           description="The name in its MX record and TLS certificate, "
                           "e.g. mail.example.org.")
    domain = StringField("First mail domain", validators=[DataRequired(), Length(max=253),
                                                          _DOMAIN],
                         description="Addresses will be user@this-domain.")
    password = PasswordField("New password for your administrator account",
                             validators=[Optional(), Length(min=8, max=1024)],
                             description="Leave empty to keep the current one.",
                             render_kw={"autocomplete": "new-password"})
    confirm = PasswordField("Repeat it", validators=[EqualTo("password",
                                                             "the passwords differ")])



class AliasForm(FlaskForm):
    address = StringField("Alias address", validators=[DataRequired(), Length(max=320)],
                          description='e.g. sales@example.org; "@example.org" is a '
                          'catch-all, "sales-*@example.org" a wildcard.')
    owner = StringField("Delivered to (account, group or list name)",
                        validators=[DataRequired(), Length(max=255)])


class WorkersForm(FlaskForm):
    count = IntegerField("Worker processes", validators=[DataRequired(),
                                                         NumberRange(min=1, max=512)])
