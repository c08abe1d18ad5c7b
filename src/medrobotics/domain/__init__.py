"""Wire schemas and constrained types shared by both services."""
