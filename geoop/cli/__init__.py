"""The ``geoop`` command. One module per sub-command, each defining
``add_parser(subparsers)`` (returns the sub-parser) and ``run(args) -> int``."""
