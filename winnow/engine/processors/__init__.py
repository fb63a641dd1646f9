"""Engine-side logits processors: per-request control that runs inside vLLM's sampler.

Every processor here is registered with the shared ``AsyncLLM`` at start-up and stays inert for
requests that do not carry its key in ``SamplingParams.extra_args``, so ordinary requests are
token-identical to an engine without them. Strategies reach them only through a typed spec
(:mod:`.specs`: ``SamplingSpec.segment``, ``SamplingSpec.vas``, ``SamplingSpec.tap``; the
token-confidence processor's :class:`~.specs.ConfidenceSpec` has no seam field yet), which the
local engine writes into ``extra_args`` under the spec's own key, never through vLLM types. A
remote backend sends segment and vas to servers started with ``winnow worker`` (vLLM's OpenAI
server with these processors), as JSON strings in ``vllm_xargs`` (:mod:`.args`), and refuses them
with none; it scores without the tap and has no token confidence (their channel is a file on the
engine's machine, and a worker refuses both).

They run in vLLM's engine-core process (pickled there by import path), so each lives in an
importable module and loads what it needs (weights, tokenizer facts) itself.
"""

PROCESSORS: tuple[str, ...] = (
    "winnow.engine.processors.tap:RewardTap",  # first: it reads the logits before any edit
    # raw logits too; it edits only the rows it ends (masked to their sentinel)
    "winnow.engine.processors.confidence:TokenConfidence",
    "winnow.engine.processors.segment:UncertaintySegmenter",
    "winnow.engine.processors.vas:ValueGuide",
)
"""``module:Class`` import paths handed to ``AsyncEngineArgs(logits_processors=...)``."""
