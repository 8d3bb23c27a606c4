"""The search side: index tag events into SQLite, search them, serve the page, backfill archives."""
