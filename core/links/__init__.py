"""Download links: signed 24-hour tokens and their state; workbook links."""
