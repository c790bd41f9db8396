"""`python worker.py …`: the same as `da-worker …` (durable_agents/worker.py), for those who run
the repository's scripts directly."""

from durable_agents.worker import main

if __name__ == "__main__":
    main()
