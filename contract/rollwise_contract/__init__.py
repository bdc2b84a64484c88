"""What the operator and the model server agree on, declared once.

Both sides import this package and nothing else of each other: the operator's API types embed the
feature schema, formats and request matches the server reads from its flags; the server exports the
metric names and label values the operator's analysis queries. It needs only pydantic, RE2 (for
the tenants' header regexes, `matches.py`) and the standard library, so the server image gains no
Kopf or kubernetes by importing it.
"""
