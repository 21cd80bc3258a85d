"""The real local stack (embedded Postgres, scripted LLM, Letta 0.16.8) for tests and ``task up``."""
