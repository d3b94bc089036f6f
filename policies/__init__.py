"""Agents that rank items for users: rule-based, classic learned and LLM."""
from policies.base import Policy, PolicyContext
from policies.registry import DEFAULT_POLICIES, available, make_policy, register

__all__ = ["Policy", "PolicyContext", "DEFAULT_POLICIES", "available", "make_policy", "register"]
