"""Jobs: the queue in the catalog, the worker, and the table of job handlers."""
