"""First-person narratives and interviews of one agent, the facts chosen from its record, phrased
by an LLM and checked (`lsm narrate`; docs/narration.md, docs/design.md §9)."""
