"""The parts of the ``tree_search`` strategy (:mod:`winnow.strategies.tree_search`, which says
what the search does and why): its parameters (:mod:`.params`), the round loop with its scoring
and pruning (:mod:`.search`), the engine calls of a round (:mod:`.expand`) and the trace's nodes
(:mod:`.nodes`)."""
