"""What a reward's configuration may say: one pydantic model per backend, told apart by
``backend`` (:data:`RewardConfig`). The backends read their own model; :mod:`.registry` reads the
file and builds the rewards from them.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, model_validator


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[A-Za-z0-9_.\-]{1,64}$")


class _Placed(_Config):
    """Where a model a reward runs lives (:mod:`.placement`)."""

    device: str | None = Field(
        None,
        pattern=r"^(cpu|cuda(:[0-9]+)?)$",
        description="cpu, cuda or cuda:N; default: cuda when CUDA is available, else cpu.",
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="Weights and hidden states; auto: bfloat16 on cuda, float32 on cpu."
    )


class ProbeConfig(_Placed):
    backend: Literal["probe"] = "probe"
    path: str | None = Field(None, description="Probe directory; default: assets/rewards/<name>.")
    backbone: str | None = Field(None, description="Backbone model dir; default: the served model.")
    allow_other_policy: bool = Field(
        False,
        description="Serve the probe whatever model is served: its head's recorded backbone is "
        "not checked against the served model (its scores then mean what they mean on another "
        "model's answers, not what its card reports).",
    )


class PoolingOptions(BaseModel):
    """How the pooling runner (:mod:`.pooling`) runs a reward model."""

    model_config = ConfigDict(extra="forbid")
    urls: list[str] = Field(
        default_factory=list,
        description="Base URLs (http://host:port) of `winnow worker --runner pooling` servers of "
        "this reward model, used in turn; none: a second vLLM engine in this process.",
    )
    served_model: str | None = Field(None, description="The model name at the workers.")
    api_key_env: str | None = Field(
        None,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="Environment variable holding the workers' API key (never the key).",
    )
    kv_cache_gib: int = Field(
        1, ge=1, description="CPU only: the in-process engine's KV cache (GiB), its own."
    )
    gpu_memory_utilization: float = Field(
        0.3,
        gt=0,
        lt=1,
        description="GPU only: the in-process engine's share of the GPU; the policy's "
        "--gpu-memory-utilization and this must add up to at most ~0.95.",
    )
    max_model_len: int | None = Field(
        None, ge=16, description="Longest input; default: the model's position limit."
    )
    timeout: float = Field(120.0, gt=0, description="Per request to a worker (s).")

    @model_validator(mode="after")
    def _urls(self) -> PoolingOptions:
        for url in self.urls:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"pooling url {url!r} must start with http:// or https://")
        return self


class _Runnable(_Placed):
    """A Hugging Face reward model run by transformers (``hf``) or by vLLM's pooling runner."""

    runner: Literal["hf", "pooling"] = Field(
        "hf",
        description="'hf': transformers in this process. 'pooling': vLLM's pooling runner (a "
        "second engine in this process, or `winnow worker --runner pooling` workers at "
        "pooling.urls); the same input rendering, scored by vLLM (prefix cache, GPU batching).",
    )
    pooling: PoolingOptions = Field(default_factory=PoolingOptions)


def _chat_template() -> Any:
    return Field(
        None, description="Jinja chat template to render with; default: the model tokenizer's."
    )


def _system_prompt() -> Any:
    return Field(
        None, description="System prompt the model was trained with; replaces the request's."
    )


class SequenceClassifierConfig(_Runnable):
    backend: Literal["seq_cls"] = "seq_cls"
    path: str = Field(description="A Hugging Face sequence-classification reward model dir.")
    max_length: int = Field(
        4096, ge=2, description="Most tokens read (cut from the left); capped by the model's."
    )
    logit_token_id: int | None = Field(
        None,
        ge=0,
        description="Read a causal LM's logit of this token at the last position instead of a "
        "score head (Llama-3.1-Nemotron-70B-Reward-HF: 0).",
    )
    chat_template: str | None = _chat_template()
    system_prompt: str | None = _system_prompt()


PRMStyle = Literal["label_token", "two_way", "value_head"]
PRMFormat = Literal["question", "chat", "multi_turn", "lines"]
DEFAULT_FORMAT: dict[str, PRMFormat] = {
    "label_token": "question",
    "two_way": "chat",
    "value_head": "lines",
}
DEFAULT_TAG: dict[str, str] = {
    "question": "ки",
    "chat": "<extra_0>",
    "multi_turn": "+",
    "lines": "\n",
}


class StepTagPRMConfig(_Runnable):
    backend: Literal["step_tag_prm"] = "step_tag_prm"
    path: str = Field(description="A PRM dir (see style and format).")
    style: PRMStyle = Field(
        "label_token",
        description="How a step is scored where it is read. 'label_token' (Math-Shepherd, "
        "RLHFlow): softmax over the LM's good/bad token logits, P(good). 'two_way' "
        "(Qwen2.5-Math-PRM): a 2-class score head, P(label 1). 'value_head' (Skywork-o1-PRM): "
        "sigmoid of the v_head value.",
    )
    step_tag: str | None = Field(
        None,
        min_length=1,
        description="The tag token written after every step; default by format: question 'ки', "
        "chat '<extra_0>', multi_turn '+' (the assistant's reply to each step), lines a newline.",
    )
    good_token: str = "+"
    bad_token: str = "-"
    format: PRMFormat | None = Field(
        None,
        description="What the model reads. 'question' (Math-Shepherd): the question, a space, "
        "then every step as '<step> <tag>', joined by newlines. 'chat' (Qwen2.5-Math-PRM): the "
        "conversation in the chat template, the answer '<step><tag><step><tag>...'. "
        "'multi_turn' (RLHFlow): the chat template over one user turn per step (the first "
        "prefixed by the question and a space), each answered by the assistant with the tag; "
        "read one token before each answer. 'lines' (Skywork-o1-PRM): BOS, the question and a "
        "newline, then each step tokenized on its own followed by the tag token. Default: "
        "'question' for label_token, 'chat' for two_way, 'lines' for value_head.",
    )
    chat_template: str | None = _chat_template()
    system_prompt: str | None = _system_prompt()

    @property
    def input_format(self) -> PRMFormat:
        return self.format if self.format is not None else DEFAULT_FORMAT[self.style]

    @property
    def tag(self) -> str:
        return self.step_tag if self.step_tag is not None else DEFAULT_TAG[self.input_format]


class JudgeConfig(_Config):
    backend: Literal["judge"] = "judge"
    template: str | None = Field(None, description="Verdict prompt with {question}, {answer}.")
    base_url: str | None = Field(
        None,
        pattern=r"^https?://",
        description="An OpenAI-compatible endpoint (…/v1) to ask instead of the policy engine.",
    )
    model: str | None = Field(None, description="The judge model's name at base_url.")
    api_key_env: str | None = Field(
        None,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="Environment variable holding the endpoint's API key (never the key).",
    )
    max_concurrency: int = Field(16, ge=1, le=1024, description="Verdicts in flight at once.")
    timeout: float = Field(60.0, gt=0, description="Per verdict request to base_url (s).")

    @model_validator(mode="after")
    def _endpoint(self) -> JudgeConfig:
        if self.base_url is None and (self.model or self.api_key_env):
            raise ValueError("model and api_key_env apply to a judge at base_url; set base_url")
        if self.base_url is not None and not self.model:
            raise ValueError("a judge at base_url needs the model to ask (model)")
        return self


class VerifierConfig(_Config):
    backend: Literal["verifier"] = "verifier"


class CompositeConfig(_Config):
    backend: Literal["composite"] = "composite"
    weights: dict[str, float] = Field(description="Named rewards and their default weights.")


RewardConfig = Annotated[
    ProbeConfig
    | SequenceClassifierConfig
    | StepTagPRMConfig
    | JudgeConfig
    | VerifierConfig
    | CompositeConfig,
    Field(discriminator="backend"),
]
RewardConfigList = TypeAdapter(list[RewardConfig])


class RewardConfigError(ValueError):
    """A reward configuration is invalid; raised at start-up."""
