"""What a reward's configuration may say: one pydantic model per backend, told apart by
``backend`` (:data:`RewardConfig`). The backends read their own model; :mod:`.registry` reads the
file and builds the rewards from them.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[A-Za-z0-9_.\-]{1,64}$")


class ProbeConfig(_Config):
    backend: Literal["probe"] = "probe"
    path: str | None = Field(None, description="Probe directory; default: assets/rewards/<name>.")
    backbone: str | None = Field(None, description="Backbone model dir; default: default model.")


def _chat_template() -> Any:
    return Field(
        None, description="Jinja chat template to render with; default: the model tokenizer's."
    )


def _system_prompt() -> Any:
    return Field(
        None, description="System prompt the model was trained with; replaces the request's."
    )


class SequenceClassifierConfig(_Config):
    backend: Literal["seq_cls"] = "seq_cls"
    path: str = Field(description="A Hugging Face sequence-classification reward model dir.")
    max_length: int = 4096
    chat_template: str | None = _chat_template()
    system_prompt: str | None = _system_prompt()


class StepTagPRMConfig(_Config):
    backend: Literal["step_tag_prm"] = "step_tag_prm"
    path: str = Field(description="A causal-LM PRM dir (Math-Shepherd or Qwen2.5-Math-PRM style).")
    style: Literal["label_token", "two_way"] = "label_token"
    step_tag: str = Field("ки", min_length=1, description="Tag token written after every step.")
    good_token: str = "+"
    bad_token: str = "-"
    format: Literal["question", "chat"] | None = Field(
        None,
        description="What the model reads. 'question' (Math-Shepherd): the question, a space, "
        "then every step as '<step> <tag>', joined by newlines. 'chat' (Qwen2.5-Math-PRM): the "
        "conversation in the chat template, the answer '<step><tag><step><tag>...'. Default: "
        "'question' for label_token, 'chat' for two_way.",
    )
    chat_template: str | None = _chat_template()
    system_prompt: str | None = _system_prompt()

    @property
    def input_format(self) -> Literal["question", "chat"]:
        if self.format is not None:
            return self.format
        return "question" if self.style == "label_token" else "chat"


class JudgeConfig(_Config):
    backend: Literal["judge"] = "judge"
    template: str | None = Field(None, description="Verdict prompt with {question}, {answer}.")


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
