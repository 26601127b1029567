"""The catalog: settings, schema and migrations, connections, the store on disk, IDs, time, audit, errors."""
