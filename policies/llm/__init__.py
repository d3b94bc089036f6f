"""LLM user agents (STARec): models, batched backend, memory, prompts, agents.

Submodules are imported on demand (``policies.llm.agents`` pulls in torch
and transformers; ``policies.llm.prompts`` does not):

* :mod:`policies.llm.models` - ``load_model(name)`` for "smollm2-135m",
  "tiny", a local folder or a hub id;
* :mod:`policies.llm.backend` - batched generation / scoring with cost
  accounting;
* :mod:`policies.llm.memory` - bounded per-user text memory;
* :mod:`policies.llm.agents` - ``llmrank`` and the ``starec*`` policies;
* :mod:`policies.llm.formats` - the registry of answer formats (template,
  answer prefix, parser options, reward terms, cost label);
* :mod:`policies.llm.prompts`, :mod:`policies.llm.parsing`,
  :mod:`policies.llm.evidence` - prompt templates, robust parsing,
  collaborative evidence;
* :mod:`policies.llm.teachers`, :mod:`policies.llm.clients`,
  :mod:`policies.llm.notes` - distillation teachers, the chat clients they
  talk through, the oracle's wording and taste notes (what is done with
  the teachers' answers is :mod:`experiments.train.distill`).
"""
