"""The clients: every operation written once, sans I/O (operations, queries), the async Queue
(queue) and its generated blocking twin (sync_queue), manual holds (hold, sync_hold), and the
one reader that serves an async queue's waits (waits)."""
