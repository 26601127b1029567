"""Images: the image services, list queries, the Excel export and the files links serve."""
