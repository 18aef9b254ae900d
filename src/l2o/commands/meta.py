"""`l2o meta`: placeholder until implemented."""


def register(subparsers) -> None:
    p = subparsers.add_parser("meta", help="(not implemented yet)")
    p.set_defaults(func=lambda args: print("l2o meta: not implemented yet") or 1)
