"""The policy interface: ``Policy.stream(messages, images) -> Iterator[str]``.

``messages`` are chat messages ``{"role", "content"}``; a message may also carry
``"images": [img_id, ...]`` naming the images shown with it, and ``images`` maps those ids to
files, so a vision-language policy can attach real pixels while a text policy ignores them.
"""

from __future__ import annotations

from typing import Iterator, Protocol, Sequence, runtime_checkable

from genevolve.trajectory import ImageRef


class PolicyError(RuntimeError):
    """The policy cannot produce a turn (endpoint down, model missing). Ends the trajectory."""


@runtime_checkable
class Policy(Protocol):
    name: str

    def stream(self, messages: list[dict], images: Sequence[ImageRef] = ()) -> Iterator[str]:
        """Yield the next assistant turn as text deltas."""
        ...


class PolicyBase:
    """Every capability the agent may use besides ``stream``, each with the default a policy that
    lacks it gets. Our policies subclass it; any object with ``stream`` (and a ``name``) still works:
    the agent wraps it with ``adopt``."""

    name: str = "policy"
    # The conversation profile the policy was trained on (the nano adapter: the compact one).
    preferred_protocol: str | None = None
    # A replayed recording announces its last round where the recording did.
    recorded_max_rounds: int | None = None

    def stream(self, messages: list[dict], images: Sequence[ImageRef] = ()) -> Iterator[str]:
        raise NotImplementedError

    def use_profile_sampling(self, defaults: dict) -> None:
        """The profile's sampling defaults (temperature, top_p, max_tokens), except what the spec set."""

    def take_warnings(self) -> list[str]:
        """Warnings for the trajectory since the last call (the agent asks every round)."""
        return []

    def prepare_turn(self, rules) -> None:
        """What the next turn may say (``grammar.TurnRules``: tools, skills, images shown, whether an
        answer is due), for a policy that decodes under the turn grammar; others ignore it."""

    def recorded_tool_reply(self) -> str | None:
        """A replayed run's recorded reply to the tool call just made; None: run the tool."""
        return None

    def stats(self) -> dict:
        """Token statistics of the turn being generated (``tokens``, ``tokens_per_s``); {} when
        the policy does not count them. The agent carries them on its text events."""
        return {}


class _Adopted(PolicyBase):
    """A plain object with ``stream``: the capabilities it has are used, the rest take the defaults."""

    def __init__(self, policy):
        self.inner = policy
        self.name = getattr(policy, "name", type(policy).__name__)
        self.preferred_protocol = getattr(policy, "preferred_protocol", None)
        self.recorded_max_rounds = getattr(policy, "recorded_max_rounds", None)

    def stream(self, messages, images=()):
        return self.inner.stream(messages, images)

    def __getattr__(self, item):  # anything else (model, tokenizer…) is the wrapped policy's
        return getattr(self.inner, item)


def adopt(policy) -> PolicyBase:
    """The policy with every capability of ``PolicyBase`` (itself when it already has them)."""
    if isinstance(policy, PolicyBase):
        return policy
    adopted = _Adopted(policy)
    for capability in ("use_profile_sampling", "take_warnings", "recorded_tool_reply", "stats", "prepare_turn"):
        own = getattr(policy, capability, None)
        if callable(own):
            setattr(adopted, capability, own)
    return adopted


def complete(policy: Policy, messages: list[dict], images: Sequence[ImageRef] = ()) -> str:
    """The whole next turn as one string."""
    return "".join(policy.stream(messages, images))
