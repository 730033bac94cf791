"""People and the review app: user add|remove|disable|enable|passwd|revoke-token|new-token|logout, serve."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from labeler.cli import (
    ProjectOpt,
    command,
    err,
    user_app,
)
from labeler.store.models import Role
from labeler.store.workspace import open_workspace


@command(user_app, "add")
def user_add(
    name: Annotated[str, typer.Argument(help="The user's name (their login).")],
    role: Annotated[Role, typer.Option(help="admin, manager, reviewer or expert.")] = Role.reviewer,
    token: Annotated[bool, typer.Option("--token", help="Make an API token (printed once) instead of asking a password.")] = False,
    password_stdin: Annotated[bool, typer.Option(help="Read the password from standard input.")] = False,
    project: ProjectOpt = None,
) -> None:
    """Give a user a role in this project: a new user gets a password (prompted, or read from stdin) or an
    API token (printed once); a user of another project sharing the store keeps theirs."""
    from labeler.store.users import add_user, exists

    ws = open_workspace(project)
    password = None
    if password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    elif not token and not exists(ws, name):
        password = typer.prompt("password", hide_input=True, confirmation_prompt=True)
    made = add_user(ws, name, role, password, with_token=token)
    err.print(f"Created {role.value} {name}")
    if made:
        print(made)


USER_ACTIONS = {"disable": "Disable a user: no login, no token, every session ended.",
                "enable": "Enable a disabled user again.",
                "revoke-token": "Revoke a user's API token.",
                "logout": "End every session of a user, on every server."}


def _user_action(action: str):
    def change(name: Annotated[str, typer.Argument(help="The user's name.")], project: ProjectOpt = None) -> None:
        from labeler.store.users import change_user

        change_user(open_workspace(project), name, action)
        err.print(f"{name}: {action} done")

    change.__doc__ = USER_ACTIONS[action]
    return change


for _action in USER_ACTIONS:
    command(user_app, _action)(_user_action(_action))


@command(user_app, "remove")
def user_remove(name: Annotated[str, typer.Argument(help="The user's name.")], project: ProjectOpt = None) -> None:
    """Take a user's role in this project away (their login and their other projects stay)."""
    from labeler.store.users import remove_member

    remove_member(open_workspace(project), name)
    err.print(f"{name}: no longer has a role in this project")


@command(user_app, "passwd")
def user_passwd(
    name: Annotated[str, typer.Argument(help="The user's name.")],
    password_stdin: Annotated[bool, typer.Option(help="Read the password from standard input.")] = False,
    project: ProjectOpt = None,
) -> None:
    """Set a user's password (every session of theirs ends)."""
    from labeler.store.users import change_user

    ws = open_workspace(project)
    password = sys.stdin.readline().rstrip("\n") if password_stdin else \
        typer.prompt("new password", hide_input=True, confirmation_prompt=True)
    change_user(ws, name, "passwd", password=password)
    err.print(f"{name}: new password set")


@command(user_app, "new-token")
def user_new_token(name: Annotated[str, typer.Argument(help="The user's name.")], project: ProjectOpt = None) -> None:
    """Give a user a new API token (printed once; the old one stops working)."""
    from labeler.store.users import change_user

    print(change_user(open_workspace(project), name, "new-token"))


@command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on; 0.0.0.0 for every interface.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    insecure_cookies: Annotated[bool, typer.Option(
        "--insecure-cookies", help="Send the session cookie over plain HTTP on a non-loopback address (no TLS proxy).")] = False,
    max_body_kb: Annotated[int, typer.Option(min=1, help="Refuse request bodies larger than this (KiB).")] = 1024,
    forwarded_allow_ips: Annotated[str | None, typer.Option(
        help="Addresses of the reverse proxies whose X-Forwarded-For/-Proto to believe (comma-separated); "
             "off by default: every client is its connection's address.")] = None,
    project: ProjectOpt = None,
) -> None:
    """Open the review UI and its API (log in as a user made by `labeler user add`)."""
    import uvicorn

    from review_ui.app import create_app

    ws = open_workspace(project)
    loopback = host in ("127.0.0.1", "localhost", "::1")
    # The session cookie travels over HTTPS only, except on loopback (plain HTTP to this machine) or when told.
    secure = not (loopback or insecure_cookies)
    err.print(f"Review UI for {ws.config.name} on http://{host}:{port}/ (Ctrl-C stops it)")
    # Forwarded headers say who the client is, so a client who may set them picks the address the login
    # throttle counts: believed only from the proxies named.
    uvicorn.run(create_app(ws, secure_cookies=secure, max_body=max_body_kb * 1024), host=host, port=port, log_level="warning",
                proxy_headers=forwarded_allow_ips is not None, forwarded_allow_ips=forwarded_allow_ips, server_header=False)


