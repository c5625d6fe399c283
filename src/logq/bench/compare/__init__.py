"""`logq bench compare`: the same workloads against logq and its peers
(PostgreSQL, Redis Streams, NATS JetStream, RabbitMQ), side by side."""
