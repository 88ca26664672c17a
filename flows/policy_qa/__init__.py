"""Policy Q&A (政策问答): knowledge base, matching engine and the chat flow."""
