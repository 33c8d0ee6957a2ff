"""The `kumo` command line: processes (`up`, `api`, `agent`, `demo`) and the operator CLI.

Built on click directly (the library Typer is built on): the resource commands are generated from the
resource registry, which click's Command/Option objects express and Typer's function signatures do not.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from kumo.agent.run import AgentOptions
from kumo.cli import render
from kumo.cli.resources import resource_groups
from kumo.cli.tokens import token_group
from kumo.cli.topology import topology_cmd
from kumo.cli.trace import trace_cmd
from kumo.client import ApiError
from kumo.datapath.layout import DEFAULT_MAX_MASKS_PER_PORT, DEFAULT_STORM_UPCALL_RATE, DEFAULT_UPCALL_RATE, MAX_MASKS
from kumo.topology.errors import KumoError


@click.group(
    help="Kumo: a distributed L2-L4 network virtualization overlay. Start with `kumo up`, then "
    "`kumo bridge create --name b1`.",
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 120},
)
@click.option("--api", "api", envvar="KUMO_API", metavar="URL", help="API server for the operator CLI (env KUMO_API).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
@click.option(
    "--token-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    envvar="KUMO_TOKEN_FILE",
    help="A file holding the API token (env KUMO_TOKEN_FILE; or the token itself in KUMO_TOKEN).",
)
@click.option(
    "--token", "token", metavar="TOKEN", help="The API token (visible to `ps`: prefer KUMO_TOKEN or --token-file)."
)
@click.version_option(package_name="kumo")
@click.pass_context
def cli(ctx: click.Context, api: str | None, as_json: bool, token_file: Path | None, token: str | None) -> None:
    if token_file is not None:
        token = token_file.read_text().strip()
    ctx.obj = {"api": api, "json": as_json, "token": token}


def security_options(fn: Any) -> Any:
    """How the API server lets clients in, shared by `kumo up` and `kumo api`."""
    options = [
        click.option(
            "--auth",
            is_flag=True,
            help="Require API tokens (`kumo token create`) on loopback too (beyond loopback they always are).",
        ),
        click.option(
            "--insecure-no-auth",
            is_flag=True,
            help="Serve without tokens even beyond loopback: anyone who reaches the API may change the network.",
        ),
        click.option("--tls-cert", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="PEM file."),
        click.option("--tls-key", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="PEM file."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _security(auth: bool, insecure_no_auth: bool, tls_cert: Path | None, tls_key: Path | None) -> Any:
    from kumo.server import Security

    return Security(auth, insecure_no_auth, tls_cert, tls_key)


STATE_DIR = click.option(
    "--state-dir",
    type=click.Path(path_type=Path),
    default=Path("/var/lib/kumo"),
    show_default=True,
    help="Where kumo.db, host_id and the agent's control socket live.",
)


def agent_options(fn: Any) -> Any:
    """The agent's tuning options, shared by `kumo up` and `kumo agent`."""
    options = [
        click.option(
            "--idle-timeout", type=float, default=60.0, show_default=True, help="Seconds before an unused flow goes."
        ),
        click.option(
            "--stateful-idle-timeout",
            type=float,
            default=30.0,
            show_default=True,
            help="The same, for flows that created conntrack/NAT state.",
        ),
        click.option(
            "--max-flows", type=click.IntRange(1), default=100_000, show_default=True, help="Kernel flows kept at most."
        ),
        click.option(
            "--upcall-rate",
            type=click.IntRange(0),
            default=DEFAULT_UPCALL_RATE,
            show_default=True,
            help="New-flow packets per second per VM interface sent to the agent (0: no limit).",
        ),
        click.option(
            "--storm-upcall-rate",
            type=click.IntRange(0),
            default=DEFAULT_STORM_UPCALL_RATE,
            show_default=True,
            help="What a VM interface that storms (over --upcall-rate for 0.5 s) keeps until it has stayed "
            "under it for 5 s (0: storm control off).",
        ),
        click.option(
            "--max-masks-per-port",
            type=click.IntRange(0, MAX_MASKS),
            default=DEFAULT_MAX_MASKS_PER_PORT,
            show_default=True,
            help="Megaflow masks one VM interface's flows may use (0: exact flows only); beyond, its new paths get "
            "exact flows and the counter megaflow_port_mask_limit rises.",
        ),
        click.option(
            "--metrics-listen",
            metavar="ADDRESS:PORT",
            help="Serve the agent's Prometheus metrics on http://ADDRESS:PORT/metrics (docs/metrics.md).",
        ),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _options(
    idle_timeout: float,
    stateful_idle_timeout: float,
    max_flows: int,
    upcall_rate: int,
    storm_upcall_rate: int,
    max_masks_per_port: int,
    metrics_listen: str | None = None,
) -> AgentOptions:
    return AgentOptions(
        idle_timeout,
        stateful_idle_timeout,
        max_flows,
        upcall_rate,
        storm_upcall_rate=storm_upcall_rate,
        max_masks_per_port=max_masks_per_port,
        metrics_listen=metrics_listen,
    )


@cli.command()
@STATE_DIR
@click.option("--listen", default="127.0.0.1:8181", show_default=True, help="ADDRESS:PORT of the REST API.")
@click.option("--no-agent", is_flag=True, help="Serve the API alone (no datapath; no root needed).")
@security_options
@agent_options
def up(
    state_dir: Path,
    listen: str,
    no_agent: bool,
    auth: bool,
    insecure_no_auth: bool,
    tls_cert: Path | None,
    tls_key: Path | None,
    **tuning: Any,
) -> None:
    """All-in-one for one machine: REST API + this host's agent on the embedded store."""
    from kumo.server import serve

    state_dir.mkdir(parents=True, exist_ok=True)
    serve(
        f"sqlite://{state_dir.resolve() / 'kumo.db'}",
        listen,
        banner="kumo up: API only (--no-agent)" if no_agent else "kumo up: API and agent",
        agent_state_dir=None if no_agent else state_dir,
        agent_options=_options(**tuning),
        security=_security(auth, insecure_no_auth, tls_cert, tls_key),
    )


@cli.command()
@click.option(
    "--store",
    required=True,
    envvar="KUMO_STORE",
    help="sqlite:///path/kumo.db or zookeeper://[user:password@]host:port[,...]/chroot (env KUMO_STORE: keeps a "
    "password out of `ps`).",
)
@click.option("--listen", default="127.0.0.1:8181", show_default=True, help="ADDRESS:PORT of the REST API.")
@click.option(
    "--store-timeout",
    type=click.FloatRange(0.1, 60),
    default=2.0,
    show_default=True,
    metavar="SECONDS",
    help="How long a request waits for ZooKeeper before it is answered 503 (a store that hangs or is cut off).",
)
@security_options
def api(
    store: str,
    listen: str,
    store_timeout: float,
    auth: bool,
    insecure_no_auth: bool,
    tls_cert: Path | None,
    tls_key: Path | None,
) -> None:
    """The REST API server alone, on any store."""
    from kumo.server import serve

    serve(store, listen, store_timeout=store_timeout, security=_security(auth, insecure_no_auth, tls_cert, tls_key))


@cli.group(invoke_without_command=True)
@click.option("--host-id", help="This host's id (default: generated once, kept in <state-dir>/host_id).")
@click.option(
    "--store",
    envvar="KUMO_STORE",
    help="zookeeper://[user:password@]host:port[,...]/chroot (env KUMO_STORE: keeps a password out of `ps`; the "
    "embedded store runs in `kumo up`).",
)
@click.option(
    "--tunnel-ip",
    help="This host's underlay address, reported with the host; tunnels use the address of its tunnel-zone membership.",
)
@click.option(
    "--flow-state",
    default="local",
    show_default=True,
    envvar="KUMO_FLOW_STATE",
    help="local (this agent's tables) or redis://[:password@]HOST:PORT/DB, rediss:// for TLS (conntrack and NAT "
    "shared by every host; env KUMO_FLOW_STATE keeps a password out of `ps`).",
)
@STATE_DIR
@agent_options
@click.pass_context
def agent(
    ctx: click.Context,
    host_id: str | None,
    store: str | None,
    tunnel_ip: str | None,
    flow_state: str,
    state_dir: Path,
    **tuning: Any,
) -> None:
    """The per-host agent (`kumo agent --store URL`), or ask the running one (`kumo agent stats`)."""
    ctx.obj = {**(ctx.obj or {}), "state_dir": state_dir}
    if ctx.invoked_subcommand is not None:
        return
    if store is None:
        raise click.UsageError("--store is required to run the agent")
    from kumo.agent.run import run_agent

    run_agent(store, state_dir, host_id, _options(**tuning), tunnel_ip, flow_state)


@agent.command("stats")
@STATE_DIR
@click.pass_context
def agent_stats(ctx: click.Context, state_dir: Path) -> None:
    """The running agent's counters: upcalls, simulations, flows installed/removed, drops by reason."""
    from kumo.agent.control import ask

    stats = ask(state_dir / "agent.sock", "stats")
    render.agent_stats(stats, as_json=ctx.find_root().obj.get("json", False))


@cli.command()
@STATE_DIR
@click.pass_context
def flows(ctx: click.Context, state_dir: Path) -> None:
    """This host's kernel flows: match, actions, counters, age, and why each exists."""
    from kumo.agent.control import ask

    rows = ask(state_dir / "agent.sock", "flows")
    render.flows(rows, as_json=ctx.obj.get("json", False))


@cli.command()
@click.option(
    "--keep",
    is_flag=True,
    help="Keep the cloud up until Ctrl-C, its API (:8181, the picture at /ui) and agent metrics (:9481) forwarded "
    "to this machine's loopback.",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default="/tmp/kumo-demo",
    show_default=True,
    help="Where the screenshot of the picture goes.",
)
def demo(keep: bool, out: Path) -> None:
    """Build a sample cloud in network namespaces (as root), show traffic crossing it, and picture it."""
    from kumo.demo import run_demo

    run_demo(keep=keep, out=out)


for _group in resource_groups():
    cli.add_command(_group)
cli.add_command(trace_cmd)
cli.add_command(token_group)
cli.add_command(topology_cmd)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; every error is one clear line and exit status 1."""
    try:
        cli.main(args=argv, prog_name="kumo", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except click.Abort:
        render.print_error("aborted")
        return 1
    except click.ClickException as exc:
        hint = ""
        if isinstance(exc, click.UsageError) and exc.ctx is not None:
            hint = f" (see `{exc.ctx.command_path} --help`)"
        render.print_error(f"{exc.format_message()}{hint}")
        return 1
    except (ApiError, KumoError) as exc:
        render.print_error(exc.message)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


def console() -> None:
    """Console-script entry point."""
    sys.exit(main())


if __name__ == "__main__":
    console()
