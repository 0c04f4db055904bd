"""Database layer: the embedded server, connections, migrations, identifiers and named queries."""
