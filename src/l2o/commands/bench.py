"""`l2o bench`: placeholder until implemented."""


def register(subparsers) -> None:
    p = subparsers.add_parser("bench", help="(not implemented yet)")
    p.set_defaults(func=lambda args: print("l2o bench: not implemented yet") or 1)
