"""The wire: the JSON shapes that winnow's server and its clients exchange.

Pydantic models only, importing nothing else of winnow, so that a client can use them without
the server's dependencies and the two sides cannot drift apart: :mod:`.requests` (what clients
send), :mod:`.responses` (what the server answers), :mod:`.rewards` (``/v1/rewards``) and
:mod:`.trace` (what a search did, in ``winnow.trace``).
"""
