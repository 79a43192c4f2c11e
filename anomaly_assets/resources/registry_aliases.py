"""The ``champion`` alias and its history: promotion, rollback, and one registry tag per change.

MLflow keeps no alias history, so the project does: a JSON list in a registered-model tag (what
rollback reads) and one readable tag per change (a line each on the MLflow page)."""

from __future__ import annotations

import datetime
import json

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from anomaly_assets.resources.registry_connection import (
    CHAMPION,
    CHAMPION_CHANGE_TAG,
    CHAMPION_HISTORY_TAG,
    HISTORY_LIMIT,
    PromotionRefused,
    RegistryConnection,
    RegistryError,
)


class ChampionAliases(RegistryConnection):
    """Who is champion, since when and why; moving the alias forward (promote) and back (rollback)."""

    def champion_history(self) -> list[dict[str, str]]:
        """Every champion change, oldest first: version, previous, action, reason, actor, at.
        Empty only when the model is not registered yet; any failure to read it raises, so a
        change never overwrites the history with itself alone."""
        try:
            tags = self.client().get_registered_model(self.model_name).tags
        except MlflowException as error:
            if error.error_code == "RESOURCE_DOES_NOT_EXIST":
                return []
            raise self._error(f"failed to read the champion history of {self.model_name}", error) from None
        try:
            return json.loads(tags.get(CHAMPION_HISTORY_TAG, "[]"))
        except json.JSONDecodeError as error:
            raise RegistryError(
                f"the {CHAMPION_HISTORY_TAG} tag of {self.model_name} at {self.where} is not valid JSON ({error})"
            ) from None

    def set_champion(self, version: str, reason: str, actor: str, action: str = "promote") -> dict[str, str]:
        client = self.client()
        try:
            client.get_model_version(self.model_name, version)
        except MlflowException as error:
            if error.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise self._error(f"failed to read {self.model_name} version {version}", error) from None
            raise LookupError(f"{self.model_name} has no version {version} at {self.where}") from None
        history = self.champion_history()
        entry = {
            "version": str(version),
            "previous": self.alias_version(CHAMPION) or "",
            "action": action,
            "reason": reason,
            "actor": actor,
            "at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        }
        history = (history + [entry])[-HISTORY_LIMIT:]
        client.set_registered_model_tag(self.model_name, CHAMPION_HISTORY_TAG, json.dumps(history))
        self._tag_change(client, entry)
        client.set_registered_model_alias(self.model_name, CHAMPION, str(version))
        client.set_model_version_tag(self.model_name, str(version), "champion_since", entry["at"])
        if entry["previous"] and entry["previous"] != entry["version"]:
            # The demoted version is champion no more: its champion_since would mislead.
            try:
                client.delete_model_version_tag(self.model_name, entry["previous"], "champion_since")
            except MlflowException:
                pass  # the previous version was deleted, or never carried the tag
        return entry

    def _tag_change(self, client: MlflowClient, entry: dict[str, str]) -> None:
        tags = client.get_registered_model(self.model_name).tags
        number = 1 + sum(1 for key in tags if key.startswith(CHAMPION_CHANGE_TAG))
        line = (
            f"{entry['at']} {entry['action']} version {entry['previous'] or '-'} -> {entry['version']} "
            f"by {entry['actor']}: {entry['reason']}"
        )
        client.set_registered_model_tag(self.model_name, f"{CHAMPION_CHANGE_TAG}{number:04d}", line[:5000])

    def promote(self, version: str, reason: str, actor: str, force: bool = False) -> dict[str, str] | None:
        """A manual promotion: ``None`` when ``version`` is champion already (nothing changes);
        a version the gate refused needs ``force``, and the refusal says why."""
        version = str(version)
        if self.alias_version(CHAMPION) == version:
            return None
        client = self.client()
        try:
            tags = client.get_model_version(self.model_name, version).tags
        except MlflowException as error:
            raise LookupError(f"{self.model_name} has no version {version} at {self.where}") from error
        if tags.get("promotion_decision") == "refused" and not force:
            raise PromotionRefused(
                f"the promotion gate refused version {version} (compared with version "
                f"{tags.get('promotion_compared_with', '?')} on {tags.get('promotion_partition', '?')}): "
                f"{tags.get('promotion_reasons') or 'no reasons recorded'}; promote it anyway with --force "
                "(run config force: true)"
            )
        if tags.get("promotion_decision") == "refused":
            reason = f"{reason} (forced past the gate's refusal)"
        return self.set_champion(version, reason=reason, actor=actor)

    def rollback(self, reason: str, actor: str) -> dict[str, str]:
        """Move ``champion`` back to the version it pointed at before the current one."""
        stack: list[str] = []
        for entry in self.champion_history():
            if entry["action"] == "rollback":
                stack = stack[:-1]
            elif not stack or stack[-1] != entry["version"]:
                stack.append(entry["version"])
        if len(stack) < 2:
            raise LookupError(f"{self.model_name} has no previous champion to roll back to (history: {stack})")
        return self.set_champion(stack[-2], reason=reason, actor=actor, action="rollback")
