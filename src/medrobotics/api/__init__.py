"""The query API service: robots, procedures, outcomes, telemetry and analytics."""
