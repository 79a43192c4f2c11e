"""Incidents from scored rows, and their delivery to alert channels."""
