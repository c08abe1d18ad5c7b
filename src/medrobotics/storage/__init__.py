"""Storage: tables, migrations, per-aggregate queries and the lake."""
