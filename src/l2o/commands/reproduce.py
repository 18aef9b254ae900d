"""`l2o reproduce`: placeholder until implemented."""


def register(subparsers) -> None:
    p = subparsers.add_parser("reproduce", help="(not implemented yet)")
    p.set_defaults(func=lambda args: print("l2o reproduce: not implemented yet") or 1)
