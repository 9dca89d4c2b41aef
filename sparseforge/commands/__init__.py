"""One module per CLI verb.  Each defines ``register(verbs)``, adding its subparser with
``set_defaults(run=...)``; ``run(args) -> int`` is the exit status."""
