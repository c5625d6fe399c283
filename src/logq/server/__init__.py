"""The I/O: the native TCP server, the HTTP app, startup, config, shutdown."""
