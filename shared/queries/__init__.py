"""Canned analyses (`.sql` files, see shared/canned_queries.py); a package so they ship."""
