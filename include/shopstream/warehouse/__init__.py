"""The warehouse in PostgreSQL: DDL per layer, COPY helpers, bronze/silver/gold entry points."""
