"""``python -m graph_sandbox [--host 127.0.0.1] [--port 7072] [--tls-port 7075] [--no-seed] [--tenant ID]``."""

from __future__ import annotations

import argparse
import asyncio
import logging
from pathlib import Path

from .config import DEFAULT_API_AUDIENCE, DEFAULT_TENANT_ID, SandboxConfig
from .server import make_server, prepare


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m graph_sandbox", description="Microsoft Graph + Entra ID sandbox")
    parser.add_argument(
        "--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1; keep it on loopback)"
    )
    parser.add_argument("--port", type=int, default=7072)
    parser.add_argument("--tls-port", type=int, default=7075, help="HTTPS listener for Entra's token endpoint")
    parser.add_argument("--tls-dir", default=".stack/graph-sandbox", help="where the listener's ca.pem is written")
    parser.add_argument("--no-seed", action="store_true", help="start empty instead of with the demo tenant")
    parser.add_argument("--tenant", default=DEFAULT_TENANT_ID, help="tenant id")
    parser.add_argument("--audience", default=DEFAULT_API_AUDIENCE, help="audience of user tokens for our API")
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = SandboxConfig(tenant_id=args.tenant, api_audience=args.audience, seed=not args.no_seed)
    sandbox, sock = prepare(config, args.host, args.port, args.tls_port, Path(args.tls_dir))
    server = make_server(sandbox, sock, log_level="warning")
    asyncio.run(server.serve(sockets=[sock]))


if __name__ == "__main__":
    main()
