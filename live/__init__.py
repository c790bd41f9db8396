"""Watching sessions live, outside history: the model activity's delta publisher
(`live.publisher`), the relay that serves sessions as Server-Sent Events (`live.relay`,
`da serve`) and the follower that renders them (`live.follow`, `da follow`)."""
