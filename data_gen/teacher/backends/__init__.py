"""LLM backends behind one interface (`LLMBackend`): generate and score_options, batched."""
from lsm.data_gen.teacher.backends.base import Conversation, Generation, LLMBackend

__all__ = ["Conversation", "Generation", "LLMBackend"]
