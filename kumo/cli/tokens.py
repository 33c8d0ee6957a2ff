"""`kumo token create|list|revoke`: API tokens, made against the store itself (so that the first admin
token can exist before anyone can use the API). A token is printed once, when it is made: keep it in a file
readable by its user only, and give it to clients as KUMO_TOKEN or `--token-file`."""

from __future__ import annotations

import click

from kumo.cli import render
from kumo.topology.store import open_store
from kumo.topology.tokens import ROLES, create_token, list_tokens, revoke_token

STORE = click.option(
    "--store",
    required=True,
    envvar="KUMO_STORE",
    help="The store the API serves: sqlite:///var/lib/kumo/kumo.db (`kumo up`) or zookeeper://host:port/chroot "
    "(env KUMO_STORE).",
)


@click.group("token", help="API tokens (the API requires them beyond loopback): create, list, revoke.")
def token_group() -> None:
    pass


@token_group.command("create", help="Make a token and print it (once: it is stored hashed).")
@STORE
@click.option("--role", type=click.Choice(ROLES), required=True, help="admin: all; reader: reads; tenant: one tenant.")
@click.option("--tenant-id", help="The tenant a `tenant` token is bound to.")
@click.option("--name", help="What the token is for (shown by `kumo token list`).")
def create(store: str, role: str, tenant_id: str | None, name: str | None) -> None:
    with open_store(store) as opened:
        row, token = create_token(opened, role, tenant_id, name)
    click.echo(token)
    click.echo(f"(token {row['id']}, role {role}: shown this once; `kumo token revoke {row['id']}` ends it)", err=True)


@token_group.command("list", help="The tokens: id, role, tenant, name, when made (never the secrets).")
@STORE
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def list_cmd(store: str, as_json: bool) -> None:
    with open_store(store) as opened:
        rows = list_tokens(opened)
    if as_json:
        render.print_json(rows)
    else:
        render.print_table(rows, ("id", "role", "tenant_id", "name", "created_at"), title=f"API tokens ({len(rows)})")


@token_group.command("revoke", help="End a token at once (its next request is refused).")
@STORE
@click.argument("token_id")
def revoke(store: str, token_id: str) -> None:
    with open_store(store) as opened:
        revoke_token(opened, token_id)
    click.echo(f"revoked token {token_id}")
