"""`callguard serve`: call audio forked by the phone system, many calls at once, each agent's panel.

- `host.py`: the `CallHost` the protocols open calls on: a worker per call (at most `max_calls`),
  one `CallSession` each on shared resources, degradation steps, the store and the floor link;
- `hub.py`: panel messages routed to the agent whose call they are about;
- `agents.py`: the agents file (agent id -> SHA-256 of their panel token) and the panel's cookie;
- `app.py`: the ASGI app (panel, SSE, call list, CTI call starts, health);
- `listeners.py`: the protocols' listeners by name, imported only when enabled;
- `runner.py`: all of it on one asyncio loop under uvicorn.
"""
