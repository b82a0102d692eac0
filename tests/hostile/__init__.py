"""caslb's hostile-input suite: smuggling, normalisation, malformed messages, real sockets."""
