"""``durable ui``: a web dashboard over a store (SPEC section 12; docs/howto/dashboard.md).

Theory of operation
-------------------
A Starlette application (``app.py``) served by Hypercorn on trio
(``server.py``), over one store opened as the command line opens it. Pages are
server-rendered HTML strings (``views.py``; the run page's timeline is
``show --html``'s own drawing), and one small script (``assets.py``) refreshes
the live part of a page by fetching it again. Reads go through the command
line's functions (``data.py``); so do the actions, so the dashboard and the
CLI cannot disagree on what "cancel" does. Who may do what is ``security.py``.

This package imports Starlette and Hypercorn (the ``ui`` extra): only
``durable ui`` imports it, never ``import durable``.
"""
