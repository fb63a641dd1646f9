"""Value-augmented sampling inside the engine: ``logits[top-k] += sum_i beta_i (Q_i - mean Q_i)``.

A request opts in with :class:`~winnow.engine.processors.specs.VasSpec` (``extra_args``
``{"winnow_vas": {"values": {"/path/to/value_model": 3.0, ...}, "top_k": 20}}``, or that object
as a JSON string from a remote worker's ``vllm_xargs``). On every
decoding step this processor takes each opted-in row's raw logits (before temperature and
penalties), recovers the policy's final hidden state from them (``h = pinv(E_S) l_S``, see
:class:`winnow.heads.value.EmbeddingInverse`), computes Q of the row's top-k tokens with each
requested value head, centres Q over those k and adds ``beta * Q`` to
their logits; the other tokens are untouched. Rows of all VAS requests in the step are done in
one batched pass per value model; there is no extra forward pass and no round trip per token.

Sampling then draws from ``pi_ref * exp(beta * Q / T)`` on the top-k (``T`` the request's
temperature; the paper's formula at ``T = 1``).

Refused per request (they edit the logits before this processor sees them, so ``h`` would be
wrong): ``min_tokens``, ``logit_bias``, ``allowed_token_ids``, ``bad_words`` and the uncertainty
segmenter. Penalties (repetition, presence, frequency) are applied by vLLM after all processors,
on the adjusted logits, and are allowed.

Nothing here may raise once a request is in the engine (an exception in the sampler kills the
engine): value models are checked by :meth:`ValueGuide.validate_params` when the request
arrives, and a model that still fails to load is logged and the row left unguided.

Value models are read only from allowed directories (:mod:`.allowed`: on a worker, its
``--allow-dir`` options), known by their real path, and at most
:data:`~.allowed.MAX_LOADED` are kept loaded.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from vllm import SamplingParams
from vllm.v1.sample.logits_processor import BatchUpdate, LogitsProcessor

from winnow.engine.processors.allowed import MAX_DIRS_PER_REQUEST, Loaded, allowed_dir
from winnow.engine.processors.args import answer_probe, finite, request_args
from winnow.engine.processors.inverse import inverse_error, shared_inverse
from winnow.engine.processors.rows import RowRules
from winnow.engine.processors.specs import SEGMENT_KEY, VAS, VAS_KEY, VAS_MAX_TOP_K
from winnow.heads.value import META_FILE, EmbeddingInverse, QHead, load_value_model

log = logging.getLogger("winnow.engine.vas")


class VasRule:
    """One opted-in row: its value models (real path -> beta) and top-k."""

    __slots__ = ("top_k", "values")

    def __init__(self, values: dict[str, float], top_k: int) -> None:
        self.values = values
        self.top_k = top_k


def parse_rule(params: SamplingParams | None) -> VasRule | None:
    """The row's VAS arguments, value models by real path (the betas of two spellings of one
    directory add up), or None; ``ValueError`` (a 400) if they are malformed or name a
    directory outside the allowed ones (:mod:`.allowed`)."""
    args = request_args(params, VAS_KEY)  # an object, or the same as a JSON string
    if args is None:
        return None
    if not isinstance(args.get("values"), dict):
        raise ValueError(f"extra_args.{VAS_KEY} needs 'values': {{value model path: beta}}")
    if len(args["values"]) > MAX_DIRS_PER_REQUEST:
        raise ValueError(f"extra_args.{VAS_KEY}.values: at most {MAX_DIRS_PER_REQUEST}")
    values: dict[str, float] = {}
    for path, beta in args["values"].items():
        if not isinstance(beta, int | float) or isinstance(beta, bool) or not finite(beta):
            raise ValueError(
                f"extra_args.{VAS_KEY}.values: beta of {path!r} must be a finite number"
            )
        real = allowed_dir(path, META_FILE, refusal(path))
        values[real] = values.get(real, 0.0) + float(beta)
    top_k = args.get("top_k", 20)
    if not isinstance(top_k, int) or not 1 <= top_k <= VAS_MAX_TOP_K:
        raise ValueError(f"extra_args.{VAS_KEY}.top_k must be an integer in [1, {VAS_MAX_TOP_K}]")
    return VasRule(values, top_k)


def refusal(path: object) -> str:
    """What a path that is not an allowed value model directory gets, whether it exists or
    not."""
    return (
        f"extra_args.{VAS_KEY}.values: {path!r} is not a value model directory this engine may read"
    )


def conflicts(params: SamplingParams) -> list[str]:
    """Settings vLLM applies to the logits before this processor runs (see module docstring)."""
    found = []
    if params.min_tokens:
        found.append("min_tokens")
    if params.logit_bias:
        found.append("logit_bias")
    if params.allowed_token_ids:
        found.append("allowed_token_ids")
    if params.bad_words:
        found.append("bad_words")
    if params.extra_args and SEGMENT_KEY in params.extra_args:
        found.append("segment")
    return found


def guide_rows(
    logits: torch.Tensor,
    rows: dict[int, VasRule],
    inverse: EmbeddingInverse,
    heads: dict[str, QHead],
) -> None:
    """Add ``sum_i beta_i * (Q_i - mean_k Q_i)`` to each row's top-k logits, in place.

    ``inverse`` and ``heads`` must be on the logits' device (:meth:`ValueGuide.apply` moves them
    there once): every tensor here lives on that device, and nothing waits for it (the row
    bookkeeping is plain Python). Q is computed in float32 and added in the logits' dtype.
    """
    if not rows:
        return
    device = logits.device
    rules = list(rows.values())
    index = torch.tensor(list(rows), dtype=torch.long, device=device)
    k = min(max(r.top_k for r in rules), logits.shape[1])
    top = torch.stack([logits[i].topk(k).indices for i in rows])  # [B, k]; no row copies
    hidden = inverse.hidden(logits, index)  # [B, H], float32
    add = torch.zeros(top.shape, dtype=torch.float32, device=device)
    for path in sorted({p for r in rules for p in r.values}):
        head = heads.get(path)
        if head is None:
            continue
        for kk in sorted({min(r.top_k, k) for r in rules}):  # centre over each row's own k
            pick = [i for i, r in enumerate(rules) if min(r.top_k, k) == kk and r.values.get(path)]
            if not pick:
                continue
            betas = [rules[i].values[path] for i in pick]
            at = torch.tensor(pick, dtype=torch.long, device=device)
            beta = torch.tensor(betas, dtype=torch.float32, device=device)
            adv = head.advantage(hidden[at], top[at, :kk], inverse.embedding)
            add[at, :kk] += beta[:, None] * adv
    finite = torch.isfinite(hidden).all(dim=1, keepdim=True)
    add.masked_fill_(~finite, 0.0)  # a row masked by someone else: leave it
    logits[index[:, None], top] += add.to(logits.dtype)


class ValueGuide(LogitsProcessor):
    """Batch-level vLLM logits processor; inert for rows without ``extra_args.winnow_vas``."""

    # value heads on the CPU by real path, shared by every instance in the process; None: the
    # directory failed to load
    _heads: Loaded[QHead | None] = Loaded()

    @classmethod
    def validate_params(cls, sampling_params: SamplingParams) -> None:
        answer_probe(sampling_params, VAS)
        rule = parse_rule(sampling_params)
        if rule is None:
            return
        bad = conflicts(sampling_params)
        if bad:
            raise ValueError(
                f"value-augmented sampling cannot be combined with {', '.join(bad)}: "
                "they change the logits the value models read"
            )

    def __init__(self, vllm_config: Any, device: torch.device, is_pin_memory: bool) -> None:
        self.state = RowRules(self._rule)
        self.rows = self.state.rows
        self.inverse: EmbeddingInverse | None = None
        self._logged: set[str] = set()  # failures logged once each
        self.error: str | None = None
        self._placed: dict[str, QHead] = {}  # the value heads on the logits' device
        self.model = getattr(getattr(vllm_config, "model_config", None), "model", None)

    def _ensure_inverse(self) -> EmbeddingInverse | None:
        """The model's inverse, shared with the reward tap (built at engine start-up in the
        background; the first VAS request waits for it if it is not ready)."""
        if self.inverse is None and self.error is None:
            self.inverse = shared_inverse(str(self.model))
            if self.inverse is None:  # logged where it failed; the engine serves the rest
                self.error = inverse_error(str(self.model)) or "no inverse"
        return self.inverse

    def _on(self, device: torch.device) -> tuple[EmbeddingInverse, dict[str, QHead]]:
        """The inverse and the value heads the rows use on ``device`` (vLLM's logits are on the
        GPU, they are loaded on the CPU): each moved there once, on its first step; heads no row
        uses are dropped once more than the cache holds are placed."""
        assert self.inverse is not None
        if self.inverse.device != device:
            self.inverse = self.inverse.to(device)
            self._placed = {}
        used = {path for rule in self.rows.values() for path in rule.values}
        if len(self._placed) > self._heads.size:
            self._placed = {p: h for p, h in self._placed.items() if p in used}
        for path in sorted(used - self._placed.keys()):
            head = self._head(path)
            if head is not None:
                self._placed[path] = head.to(device)
        return self.inverse, self._placed

    def is_argmax_invariant(self) -> bool:
        return False  # it changes greedy choices too, and must see logits before temperature

    def _head(self, path: str) -> QHead | None:
        """The value head in directory ``path`` (a real path the request was checked for),
        loaded once; None if it cannot serve this model."""
        inverse = self.inverse
        if inverse is None:
            return self._heads.peek(path)

        def load() -> QHead | None:
            try:
                head, _ = load_value_model(path)
                vocab, hidden = inverse.embedding.shape
                if head.hidden_size != hidden or head.vocab_size != vocab:
                    raise ValueError(
                        f"head is {head.hidden_size}x{head.vocab_size}, model {hidden}x{vocab}"
                    )
            except Exception as exc:
                log.error("value model %s not usable, row left unguided: %s", path, exc)
                return None
            return head

        return self._heads.get(path, load)

    def _rule(self, params: SamplingParams, output: list[int]) -> VasRule | None:
        try:
            rule = parse_rule(params)
        except ValueError:  # validated on arrival; never fail inside the engine
            return None
        if rule is None or self._ensure_inverse() is None:
            return None
        for path in rule.values:
            self._head(path)
        return rule

    def update_state(self, batch_update: BatchUpdate | None) -> None:
        self.state.update(batch_update)

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        if self.rows and self.inverse is not None:
            try:
                guide_rows(logits, self.rows, *self._on(logits.device))
            except Exception as exc:  # never fail inside the engine: rows go unguided
                key = type(exc).__name__
                if key not in self._logged:
                    self._logged.add(key)
                    log.exception("value guide failed; rows sampled unguided")
        return logits
