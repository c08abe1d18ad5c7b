"""The data ingestion service (port 8080)."""
