"""The simulated model behind the demo: how long an answer waits in the queue, how
long prefill takes, the gaps between tokens, and when a request fails.

One source of truth for the live demo (``demo.gateway`` sleeps these delays while
it streams) and for ``manage.py demo_traffic`` (which writes them as timestamps),
so the charts of both look alike. Plain functions of a ``random.Random``: the
same seed gives the same answers.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

# First token 150-1200 ms (queue + prefill, the gateway's own few ms included),
# then 20-80 ms between tokens; now and then a slow queue or a short stall.
FIRST_TOKEN_MIN_S = 0.150
FIRST_TOKEN_MAX_S = 1.200
GAP_MIN_S = 0.020
GAP_MAX_S = 0.080
SLOW_QUEUE_RATE = 0.15
STALL_RATE = 0.01
STALL_MAX_S = 0.250
ERROR_RATE = 1 / 15  # 429 from the gateway's rate limit or 500 from the model server


@dataclass(frozen=True)
class Model:
    """A model the demo gateway routes to. ``self_hosted`` models run on a vLLM-style
    server that exports its own ``llm_request`` span; hosted ones (an API vendor)
    show only as the gateway's GenAI client span."""

    name: str
    provider: str
    self_hosted: bool
    tpot_s: float  # typical gap between tokens
    prefill_s_per_1k: float  # prefill seconds per 1,000 input tokens
    weight: float  # share of traffic in demo_traffic


MODELS: tuple[Model, ...] = (
    Model("llama-3.1-8b-instruct", "vllm", True, 0.024, 0.05, 0.30),
    Model("llama-3.3-70b-instruct", "vllm", True, 0.055, 0.22, 0.20),
    Model("qwen2.5-32b-instruct", "vllm", True, 0.040, 0.14, 0.15),
    Model("gpt-4o-mini", "openai", False, 0.030, 0.08, 0.25),
    Model("claude-3-5-haiku", "anthropic", False, 0.045, 0.10, 0.10),
)
MODELS_BY_NAME = {m.name: m for m in MODELS}
DEFAULT_MODEL = MODELS[0].name

ANSWER = (
    "Sure. What a user feels in a chat is mostly the wait for the first token: the "
    "request crosses the network, the gateway checks and routes it, the model server "
    "queues it, and prefill reads the whole prompt before a single word comes back. "
    "After that, tokens stream at a steady pace, and a stall of a few hundred "
    "milliseconds is noticed at once. llmrum measures both sides of that wait: the "
    "snippet in this page times the answer as you see it, the gateway and the model "
    "server export their spans, and the correlator stitches them into one trace, with "
    "the time split into network, gateway, queue and model. Press Stop or Regenerate "
    "and the reports will show that too. "
)
WORDS = tuple(ANSWER.split())


@dataclass
class AnswerPlan:
    model: Model
    input_tokens: int
    queue_s: float
    prefill_s: float
    gaps_s: list[float] = field(default_factory=list)  # one per token after the first
    error_status: int | None = None  # 429 or 500: no token is streamed
    request_id: str = ""

    @property
    def output_tokens(self) -> int:
        return 0 if self.error_status else len(self.gaps_s) + 1

    @property
    def ttft_s(self) -> float:
        return self.queue_s + self.prefill_s

    def token_text(self, i: int) -> str:
        word = WORDS[i % len(WORDS)]
        return word if i == 0 else f" {word}"


def pick_model(rng: random.Random) -> Model:
    return rng.choices(MODELS, weights=[m.weight for m in MODELS])[0]


def plan_answer(
    rng: random.Random,
    model: Model | str | None = None,
    *,
    input_tokens: int | None = None,
    output_tokens: int | None = None,
    error_rate: float = ERROR_RATE,
) -> AnswerPlan:
    """Draw one answer: queue and prefill (their sum is the model's first token,
    150-1200 ms), the gaps between the following tokens, or an error."""
    if model is None:
        model = pick_model(rng)
    elif isinstance(model, str):
        model = MODELS_BY_NAME.get(model, MODELS[0])
    if input_tokens is None:
        input_tokens = int(min(6000, rng.lognormvariate(6.0, 0.8)))  # median ~400
    slow = rng.random() < SLOW_QUEUE_RATE
    queue = rng.uniform(0.25, 0.70) if slow else rng.uniform(0.002, 0.040)
    prefill = 0.09 + model.prefill_s_per_1k * input_tokens / 1000 + rng.uniform(0.0, 0.15)
    total = min(max(queue + prefill, FIRST_TOKEN_MIN_S), FIRST_TOKEN_MAX_S)
    # Keep the split but fit the bounds.
    scale = total / (queue + prefill)
    plan = AnswerPlan(
        model=model,
        input_tokens=max(1, input_tokens),
        queue_s=queue * scale,
        prefill_s=prefill * scale,
        request_id=f"chatcmpl-{rng.getrandbits(64):016x}",
    )
    if rng.random() < error_rate:
        plan.error_status = rng.choice((429, 500))
        return plan
    if output_tokens is None:
        output_tokens = int(min(700, max(8, rng.lognormvariate(4.6, 0.6))))  # median ~100
    plan.gaps_s = [token_gap(rng, model) for _ in range(max(1, output_tokens) - 1)]
    return plan


def token_gap(rng: random.Random, model: Model) -> float:
    if rng.random() < STALL_RATE:
        return rng.uniform(GAP_MAX_S, STALL_MAX_S)
    # Triangular around the model's pace (cheaper than a normal draw, 10^6 times a run).
    gap = model.tpot_s * (0.6 + 0.4 * (rng.random() + rng.random()))
    return min(max(gap, GAP_MIN_S), GAP_MAX_S)
