"""PostgreSQL access shared by the API and the activities: pool, migrations, queries."""
