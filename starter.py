"""`python starter.py …`: the same as `da …` (durable_agents/cli.py), for those who run the
repository's scripts directly."""

from durable_agents.cli import main

if __name__ == "__main__":
    main()
