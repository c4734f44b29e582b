"""The LLM teacher: prompts and answers, backends, its policy in the society loop, sensitivity."""
