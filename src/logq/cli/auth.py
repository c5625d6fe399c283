"""`logq auth ...`: make the secrets the config's `auth:` section stores."""

from __future__ import annotations

import sys

import click

from logq.server.auth import hash_password, new_token


@click.group("auth")
def auth() -> None:
    """Make password hashes and tokens for the config file's auth.users."""


@auth.command("hash-password")
@click.option("--stdin", "from_stdin", is_flag=True, help="Read the password from stdin.")
def hash_password_command(from_stdin: bool) -> None:
    """Print a salted PBKDF2-SHA256 hash of a password (asked twice unless --stdin),
    for `auth.users.NAME.password`. The password itself is never stored."""
    if from_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = click.prompt("password", hide_input=True, confirmation_prompt=True)
    if not password:
        raise click.ClickException("the password is empty")
    click.echo(hash_password(password))


@auth.command("new-token")
def new_token_command() -> None:
    """Print a new random token (give it to the client) and the hash to put in
    `auth.users.NAME.token` (the server keeps only that)."""
    token, stored = new_token()
    click.echo(f"token: {token}")
    click.echo(f"config: {stored}")
