"""What an MLflow server's refusal means for the person who hit it (the production server runs
MLflow's basic-auth app): not signed in, the credentials rejected, or not allowed."""

from __future__ import annotations

import os

USERNAME_ENV, PASSWORD_ENV = "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"
_UNAUTHENTICATED = ("UNAUTHENTICATED", "CUSTOMER_UNAUTHORIZED")


def auth_failure(error: BaseException, where: str) -> str | None:
    """A sentence for a 401 or 403 from the MLflow server at ``where``; None for any other error.
    It names the user, never the password."""
    code = getattr(error, "error_code", None)
    text = str(error)
    user = os.environ.get(USERNAME_ENV, "")
    if code in _UNAUTHENTICATED or "error code 401" in text:
        if not user or not os.environ.get(PASSWORD_ENV):
            return (
                f"MLflow at {where} requires a login: set {USERNAME_ENV} and {PASSWORD_ENV} "
                "(an MLflow user of the server's basic-auth app)"
            )
        return f"MLflow at {where} rejected the credentials of user {user!r} ({USERNAME_ENV} / {PASSWORD_ENV}): wrong password, or no such user"
    if code == "PERMISSION_DENIED" or "error code 403" in text:
        return (
            f"MLflow at {where}: user {user!r} may not do this: an MLflow admin grants EDIT (or MANAGE) "
            "on the registered model or experiment (see README, Production: access)"
        )
    return None
