"""Logs now; metrics and traces plug in here."""
