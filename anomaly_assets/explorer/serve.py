"""``anomaly-assets explore``: the explorer behind waitress (a production WSGI server)."""

from __future__ import annotations

import logging
import sys

from anomaly_assets.explorer.config import explorer_sources, explorer_token
from anomaly_assets.settings import Settings


def serve(host: str, port: int, threads: int = 4) -> int:
    import sqlalchemy as sa
    from waitress import serve as waitress_serve

    from anomaly_assets.explorer.app import create_app

    logging.getLogger("alembic").setLevel(logging.WARNING)
    settings = Settings.from_env()
    sources = explorer_sources(settings)
    token = explorer_token()
    app = create_app(sources.store, sources.storage_path, token=token)
    database = sa.make_url(sources.store.url).render_as_string(hide_password=True)
    print(
        f"anomaly explorer on http://{host}:{port}/\n"
        f"  results database {database}\n  partition files  {sources.storage_path}\n"
        f"  access           {'bearer token (ANOMALY_ASSETS_EXPLORER_TOKEN)' if token else 'open (no ANOMALY_ASSETS_EXPLORER_TOKEN)'}",
        file=sys.stderr,
        flush=True,
    )
    if token is None and host not in ("127.0.0.1", "localhost", "::1"):
        print(f"  warning: listening on {host} without a token: anyone who reaches it reads the results", file=sys.stderr)
    waitress_serve(app, host=host, port=port, threads=threads, ident="anomaly-explorer")
    return 0
