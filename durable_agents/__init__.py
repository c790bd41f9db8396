"""Durable Agents: a self-hosted runtime for long-running AI agents on Temporal."""
