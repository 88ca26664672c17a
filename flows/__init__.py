"""Flows: one module (or small package) per conversation the bot can have.

Flows register themselves with :func:`flows.api.flow`; :func:`flows.api.load_all` imports them.
"""
