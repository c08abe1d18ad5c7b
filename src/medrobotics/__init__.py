"""Data platform for fleets of surgical robots: ingestion and query services."""

__version__ = "0.1.0"
