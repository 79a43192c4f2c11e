"""``python -m anomaly_assets.webserver``: ``dagster-webserver`` (same options) that tags every run
it launches with the user the authenticating proxy signed in.

Dagster OSS has no users: behind the proxy (deploy/Caddyfile) each request carries the signed-in
user in ``X-Forwarded-User``, and this adds it as the run tag ``anomaly_assets/launched_by`` to
every launch, re-execution and backfill mutation, replacing any value the client sent. The audit
trail names that user for what the run changes (``anomaly_assets.core.audit.run_launcher``).
Without the header (no proxy) requests pass unchanged.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from anomaly_assets.core.audit import LAUNCHED_BY_TAG, PROXY_USER_HEADER

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]]
_HEADER = PROXY_USER_HEADER.lower().encode()


def _with_tag(tags: list | None, user: str) -> list:
    kept = [t for t in tags or [] if isinstance(t, dict) and t.get("key") != LAUNCHED_BY_TAG]
    return [*kept, {"key": LAUNCHED_BY_TAG, "value": user}]


def tag_launches(payload: Any, user: str) -> bool:
    """Add the tag to every launch in a GraphQL request body (one operation or a batch); True
    when something was tagged."""
    if isinstance(payload, list):
        return any([tag_launches(item, user) for item in payload])
    if not isinstance(payload, dict) or "mutation" not in str(payload.get("query", "")):
        return False
    variables = payload.get("variables") or {}
    tagged = False
    params = list(variables.get("executionParamsList") or [])
    if isinstance(variables.get("executionParams"), dict):
        params.append(variables["executionParams"])
    for execution in params:
        metadata = execution.setdefault("executionMetadata", {}) or {}
        execution["executionMetadata"] = metadata
        metadata["tags"] = _with_tag(metadata.get("tags"), user)
        tagged = True
    for key, field in (("backfillParams", "tags"), ("reexecutionParams", "extraTags")):
        if isinstance(variables.get(key), dict):
            variables[key][field] = _with_tag(variables[key].get(field), user)
            tagged = True
    return tagged


class LaunchedByMiddleware:
    """ASGI middleware: tags the launches of POST .../graphql requests that carry the proxy's header."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive, send) -> None:
        headers = dict(scope.get("headers") or []) if scope["type"] == "http" else {}
        user = headers.get(_HEADER, b"").decode("latin-1").strip()
        if not user or scope.get("method") != "POST" or not scope.get("path", "").endswith("/graphql"):
            await self.app(scope, receive, send)
            return
        body, more = b"", True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        try:
            payload = json.loads(body)
            if tag_launches(payload, user):
                body = json.dumps(payload).encode()
        except ValueError:  # not JSON (a file upload): pass it on as it came
            pass
        scope = {
            **scope,
            "headers": [(k, v) for k, v in scope["headers"] if k != b"content-length"]
            + [(b"content-length", str(len(body)).encode())],
        }
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if sent:
                return await receive()
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


def install() -> None:
    """Add the middleware to every DagsterWebserver app this process builds."""
    from dagster_webserver.webserver import DagsterWebserver
    from starlette.middleware import Middleware

    if getattr(DagsterWebserver, "_launched_by_installed", False):
        return
    original = DagsterWebserver.build_middleware

    def build_middleware(self) -> list:
        return [*original(self), Middleware(LaunchedByMiddleware)]

    DagsterWebserver.build_middleware = build_middleware
    DagsterWebserver._launched_by_installed = True


def main() -> None:
    from dagster_webserver.cli import main as webserver_main

    install()
    webserver_main()


if __name__ == "__main__":
    main()
