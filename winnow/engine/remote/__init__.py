"""The generator seam over remote vLLM servers (:mod:`.backend`): what it learns of them
(:mod:`.servers`), what goes over the wire (:mod:`.wire`, :mod:`.token_texts`), and
``winnow worker`` (:mod:`.worker`), the vLLM server with winnow's processors loaded."""
