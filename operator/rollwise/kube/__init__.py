"""The only code that talks to the API server: apply children, patch status, post events.

Nothing here decides. Writes use server-side apply with one field manager, and are skipped when
the live object already carries the hash of what we would apply, so an idle reconcile writes
nothing.
"""
