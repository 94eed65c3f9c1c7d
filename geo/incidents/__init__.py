"""Incidents: intake, workflow, time limits, escalation, metrics, bulk import and the supervisor map's data."""
