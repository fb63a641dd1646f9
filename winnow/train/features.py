"""Features of sampled answers read from the policy itself, for reward training and ablations.

For every answer to a question, one forward pass of the policy (transformers, fp32) over
prompt + response, with the prompt encoded once per question and its keys/values shared by all
its answers (the answers of one question differ only after the prompt). Per answer:

* ``last``: final-layer hidden state (after the final norm) at the response's last token — what
  the shipped probe reads, and what the engine computes at the step that ends the answer;
* ``mean``: final-layer hidden states averaged over the response tokens;
* ``answer``: final-layer hidden state at the last token of the extracted final answer (else
  ``last``);
* ``layer{L}``: the hidden state of an intermediate layer at the last token;
* ``stats``: token log-probabilities of the response under the policy (mean, min, sum, of the
  answer span), the response length, whether the answer parses, whether it hit max_tokens.

Cached per question in ``work_dir`` (one ``.pt`` file a question), so extraction resumes.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from winnow.models.tokens import prompt_ids, special_prefix
from winnow.rewards.probe import answer_span, answer_tokens
from winnow.train.samples import QuestionSamples
from winnow.train.tasks import messages

LAYERS = (10, 15, 20, 25)  # intermediate layers read at the last token (SmolLM2-135M has 30)
STATS = (
    "mean_logprob",
    "min_logprob",
    "sum_logprob",
    "answer_logprob",
    "tokens",
    "parsed",
    "truncated",
)


def cache_key(q: QuestionSamples) -> str:
    """The name of a question's cached features (its prompt and answers' texts)."""
    h = hashlib.sha256()
    h.update(q.prompt.encode())
    for s in q.samples:
        h.update(b"\0" + s.text.encode())
    return h.hexdigest()[:24]


class FeatureReader:
    """The policy in transformers, reading the features above."""

    def __init__(self, model_dir: str | Path) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        self.model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
        self.model.eval()
        # the intermediate layers this model has (a model of any depth can be read)
        depth = int(getattr(self.model.config, "num_hidden_layers", max(LAYERS)))
        self.layers = tuple(layer for layer in LAYERS if layer < depth)

    def render(self, messages: list[dict[str, str]]) -> str:
        return str(
            self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        )

    @torch.inference_mode()
    def prompt_states(self, prompts: Sequence[str]) -> torch.Tensor:
        """The final hidden state (after the norm) at each prompt's last token, ``[P, H]``,
        tokenized as the engine and a probe's backbone tokenize a prompt (the tokenizer's special
        prefix once, then the text: :mod:`winnow.models.tokens`): what a domain head
        (:mod:`winnow.heads.domain`) reads at serve time."""
        prefix = special_prefix(self.tokenizer)
        out = []
        for prompt in prompts:
            ids = prompt_ids(self.tokenizer, prompt, prefix)
            out.append(self.model.model(input_ids=torch.tensor([ids])).last_hidden_state[0, -1])
        return torch.stack(out) if out else torch.empty(0, self.model.config.hidden_size)

    @torch.inference_mode()
    def question(
        self, prompt: str, responses: Sequence[str], chunk_tokens: int = 768
    ) -> dict[str, torch.Tensor]:
        """Features of every response to one prompt (rows in ``responses`` order).

        The prompt is encoded once; distinct responses run in length-sorted chunks of about
        ``chunk_tokens`` padded tokens over its shared keys/values, and the output layer runs
        only on response tokens (it costs a quarter of the model on every row it touches)."""
        tok = self.tokenizer
        p_ids = prompt_ids(tok, prompt)  # as the engine and the served probe read a prompt
        unique = sorted(set(responses), key=lambda r: (len(r), r))
        encoded = [tok(r, add_special_tokens=False, return_offsets_mapping=True) for r in unique]
        # a response must have at least one token to be read; an empty one reads the prompt end
        r_ids = [list(e["input_ids"]) or [p_ids[-1]] for e in encoded]
        past = self.model.model(input_ids=torch.tensor([p_ids[:-1]]), use_cache=True)
        rows: dict[str, list[torch.Tensor]] = {"last": [], "mean": [], "answer": [], "stats": []}
        for layer in self.layers:
            rows[f"layer{layer}"] = []
        start = 0
        while start < len(unique):
            stop = start + 1
            while (
                stop < len(unique) and (stop - start + 1) * (len(r_ids[stop]) + 1) <= chunk_tokens
            ):
                stop += 1
            self._chunk(p_ids, past.past_key_values, unique[start:stop], encoded[start:stop],
                        r_ids[start:stop], rows)  # fmt: skip
            start = stop
        index = {text: i for i, text in enumerate(unique)}
        pick = torch.tensor([index[r] for r in responses])
        return {k: torch.stack(v)[pick].clone() for k, v in rows.items()}

    def _chunk(
        self,
        p_ids: list[int],
        past: Any,
        texts: Sequence[str],
        encoded: Sequence[Any],
        r_ids: Sequence[list[int]],
        rows: dict[str, list[torch.Tensor]],
    ) -> None:
        from transformers import DynamicCache

        batch, width = len(texts), max(len(r) for r in r_ids) + 1
        ids = torch.full((batch, width), self.tokenizer.pad_token_id or 0, dtype=torch.long)
        for b, r in enumerate(r_ids):
            ids[b, : len(r) + 1] = torch.tensor([p_ids[-1], *r])
        data = [
            (lay.keys.expand(batch, -1, -1, -1), lay.values.expand(batch, -1, -1, -1))
            for lay in past.layers
        ]
        n_prompt = len(p_ids) - 1
        res = self.model.model(
            input_ids=ids,
            attention_mask=torch.ones((batch, n_prompt + width), dtype=torch.long),
            position_ids=(n_prompt + torch.arange(width)).expand(batch, -1),
            past_key_values=DynamicCache(ddp_cache_data=data),
            use_cache=False,
            output_hidden_states=True,
        )
        final = res.last_hidden_state  # [B, W, H]; position 0 is the prompt's last token
        for b, (e, r) in enumerate(zip(encoded, r_ids, strict=True)):
            n = len(r)
            # position t predicts token t+1: the logprob of every response token
            logp = self.model.lm_head(final[b, :n]).log_softmax(-1)
            token_lp = logp[torch.arange(n), torch.tensor(r)]
            last = n  # index in the padded row of the response's last token
            found = answer_tokens(texts[b], e["offset_mapping"])
            answer_at = (found[-1] + 1) if found else last
            rows["last"].append(final[b, last])
            rows["mean"].append(final[b, 1 : n + 1].mean(0))
            rows["answer"].append(final[b, answer_at])
            for layer in self.layers:
                rows[f"layer{layer}"].append(res.hidden_states[layer][b, last])
            ans_lp = token_lp[found].sum() if found else token_lp.new_zeros(())
            rows["stats"].append(
                torch.stack(
                    [
                        token_lp.mean(),
                        token_lp.min(),
                        token_lp.sum(),
                        ans_lp,
                        token_lp.new_tensor(float(n)),
                        token_lp.new_tensor(float(answer_span(texts[b]) is not None)),
                        token_lp.new_tensor(0.0),  # filled by the caller (finish reason)
                    ]
                )
            )


def extract(
    reader: FeatureReader,
    rows: Sequence[QuestionSamples],
    work_dir: Path,
    log_every: int = 20,
) -> dict[str, torch.Tensor]:
    """Features of every sample of ``rows`` (concatenated in row, then sample order); each
    question's features are cached in ``work_dir`` and reused on the next call."""
    work_dir.mkdir(parents=True, exist_ok=True)
    parts: list[dict[str, torch.Tensor]] = []
    started, fresh = time.monotonic(), 0
    for i, q in enumerate(rows):
        path = work_dir / f"{cache_key(q)}.pt"
        if path.exists():
            feats = torch.load(path)
        else:
            prompt = q.prompt or reader.render(messages(q.question))
            feats = {
                k: v.clone()
                for k, v in reader.question(prompt, [s.text for s in q.samples]).items()
            }
            truncated = torch.tensor([float(s.finish_reason == "length") for s in q.samples])
            feats["stats"][:, STATS.index("truncated")] = truncated
            torch.save(feats, path)
            fresh += 1
            if fresh % log_every == 0:
                rate = fresh / (time.monotonic() - started)
                print(f"[features] {i + 1}/{len(rows)} questions ({rate * 60:.1f}/min)", flush=True)
        parts.append(feats)
    return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}


def describe(features: dict[str, Any]) -> str:
    return ", ".join(f"{k} {tuple(v.shape)}" for k, v in features.items())
