"""`python -m experiments.run --help` lists every command, and every option of every command states its default
(or is a flag, or is marked required) exactly once."""

import argparse

import pytest

from experiments.run import COMMANDS, HelpFormatter, build_parser

# Options whose help does not say what happens without them (none left).
KNOWN_GAPS = set()


def subparsers():
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return parser, action.choices


def test_top_level_help_lists_every_command():
    parser, commands = subparsers()
    text = parser.format_help()
    assert set(commands) == set(COMMANDS)
    for name in COMMANDS:
        assert f"\n    {name} " in text or f"\n    {name}\n" in text, name


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_option_states_its_default(command):
    sub = subparsers()[1][command]
    formatter = HelpFormatter(prog="x")
    text = sub.format_help()
    for action in sub._actions:
        if not action.option_strings or isinstance(action, argparse._HelpAction):
            continue
        option = action.option_strings[-1]
        assert option in text
        line = formatter._get_help_string(action) % {"default": action.default}
        assert line.lower().count("default") <= 1, f"{command} {option}: default stated twice: {line}"
        if (command, option) in KNOWN_GAPS:
            continue
        flag = isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction))
        assert flag or action.required or "default" in line.lower(), f"{command} {option}: no default: {line}"
