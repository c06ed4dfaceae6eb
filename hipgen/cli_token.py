"""The ``hipgen token`` commands: make a signing secret and mint bearer tokens for the services.
Registered on :data:`hipgen.cli.app` when that module loads.

The token code lives in ``services.auth`` (the servers verify what it signs); it is imported inside
the commands, so that the rest of the CLI does not load gRPC.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Annotated

import typer

from hipgen.cli import _fail, _user_errors, app, console

token_app = typer.Typer(no_args_is_help=True, help="Bearer tokens for the hipgen services (JWT, HS256).")
app.add_typer(token_app, name="token")


@token_app.command("secret")
def token_secret(
    out: Annotated[Path, typer.Option("--out", "-o", help="file to write the secret to (mode 0600)")],
    force: Annotated[bool, typer.Option(help="replace an existing file")] = False,
) -> None:
    """Write a new random signing secret (64 hex digits) for ``auth_secret_file``."""
    if out.exists() and not force:
        raise _fail(f"{out}: exists (pass --force to replace it; tokens signed with it stop working)")
    with _user_errors():
        out.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32) + "\n")
    console.print(f"wrote {out}", highlight=False)


@token_app.command("create")
def token_create(
    secret_file: Annotated[Path, typer.Option("--secret-file", help="the servers' auth_secret_file")],
    subject: Annotated[str, typer.Option("--subject", help="client id (the token's sub claim)")],
    scopes: Annotated[
        str, typer.Option("--scopes", help="comma-separated: measure, generate, score, datasets, admin")
    ],
    ttl: Annotated[int, typer.Option("--ttl", min=1, help="lifetime in seconds")] = 3600,
) -> None:
    """Print a signed bearer token for SUBJECT with SCOPES, valid for TTL seconds (send it as
    ``authorization: Bearer <token>``)."""
    from services.auth import load_secret, make_token

    with _user_errors():
        token = make_token(load_secret(secret_file), subject, scopes.split(","), ttl)
    print(token)


__all__ = ["token_app"]
