"""The HTTP API of `da serve` that the official `anthropic` SDK speaks (Claude Managed Agents:
`client.beta.agents`, `environments`, `sessions`, `sessions.events`, `vaults`, `deployments`),
on this runtime: sessions are SessionWorkflows, definitions live in the API's database."""
