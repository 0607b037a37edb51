"""Persistence: SQLAlchemy 2 models and the queries the service needs.

Functions here take a Session and never commit; the service owns transactions.
"""
