"""`ddpg serve`: an HTTP restoration service with step-level continuous batching (scheduler, app, server)."""
