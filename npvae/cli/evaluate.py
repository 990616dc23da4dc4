"""Placeholder while the subcommand is written."""
from .common import HelpFormatter


def add_command(sub, name):
    p = sub.add_parser(name, help="(being written)", formatter_class=HelpFormatter)
    p.set_defaults(run=lambda args: 2)
