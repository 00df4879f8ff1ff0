"""The Redis layer: key names (keys), the Lua bridge (scripts), payload encoding (codec), clients
from URLs (clients), and the transport that sends script calls exactly once (transport, over the
pipelined connections of connection and the reply handling of wire)."""
