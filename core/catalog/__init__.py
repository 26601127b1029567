"""The catalog: settings, the OS matrix, schema and migrations, connections, the store, IDs, time, audit, errors."""
