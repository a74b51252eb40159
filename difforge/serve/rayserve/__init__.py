"""``difforge serve``: an artifact behind Ray Serve (HTTP, batching across clients, replicas
on a local cluster or an existing one). Imports Ray; the ``serve`` extra installs it."""
