"""Django's PostgreSQL engine behind the per-database circuit (ENGINE "backend.sharding.postgresql")."""
